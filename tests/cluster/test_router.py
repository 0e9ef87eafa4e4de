"""Two mint serve workers behind the adapter-affinity router: sessions spread over the workers, each
adapter's requests stay on its worker, checkpoints cross workers through the shared store, and results
equal the in-process ones. The stock Tinker SDK works through the router too.

Marked slow: the two worker processes take ~15 s to start on a 2-core machine."""

from __future__ import annotations

import os
import threading
import time

import pytest
import uvicorn

import mint
from mint import types
from mint.cluster import Cluster, create_router_app
from tests.client.test_training import make_data
from tests.server.running import ALICE, KEYS, free_port

pytestmark = pytest.mark.slow

ADAM = types.AdamParams(learning_rate=1e-2)
PROMPT = [1, 40, 41, 42, 43]


@pytest.fixture(scope="module")
def cluster(tiny_llama, mint_home):
    env = {**os.environ, "MINT_HOME": str(mint_home), "MINT_API_KEYS": KEYS}
    with Cluster(2, [tiny_llama], threads=1, env=env) as workers:
        app = create_router_app(workers.urls)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app.state.router
        server.should_exit = True
        thread.join(10)


def test_sessions_spread_and_adapters_stay_on_their_worker(cluster, tiny_llama):
    url, router = cluster
    a = mint.ServiceClient(base_url=url, api_key=ALICE)
    b = mint.ServiceClient(base_url=url, api_key=ALICE)
    wa, wb = router.pins["session_id"].get(a.session_id), router.pins["session_id"].get(b.session_id)
    assert {wa, wb} == {0, 1}
    ta = a.create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    tb = b.create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    assert router.pins["model_id"].get(ta.model_id) == wa and router.pins["model_id"].get(tb.model_id) == wb
    local = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    for step in range(2):
        data = make_data(3, seed=70 + step)
        la, lb = ta.forward_backward(data), tb.forward_backward(data)
        ll = local.forward_backward(data)
        ta.optim_step(ADAM), tb.optim_step(ADAM), local.optim_step(ADAM).result()
        want = ll.result().metrics["loss:sum"]
        assert la.result().metrics["loss:sum"] == pytest.approx(want, rel=1e-6)
        assert lb.result().metrics["loss:sum"] == pytest.approx(want, rel=1e-6)
    # A checkpoint saved on a's worker is sampled on b's worker (shared store), with the same tokens.
    sampler_a = ta.save_weights_and_get_sampling_client("shared")
    sampler_b = b.create_sampling_client(model_path=sampler_a.model_path)
    assert router.pins["sampling_session_id"].get(sampler_b.sampling_session_id) == wb
    greedy = types.SamplingParams(max_tokens=5, temperature=0.0)
    expected = local.save_weights_and_get_sampling_client("shared-local").sample(PROMPT, 1, greedy).result()
    assert sampler_b.sample(PROMPT, 1, greedy).result().sequences[0].tokens == expected.sequences[0].tokens
    assert sampler_a.sample(PROMPT, 1, greedy).result().sequences[0].tokens == expected.sequences[0].tokens
    # Closing a sampler reaches the worker holding it (the pin is dropped only on its 200).
    closed = sampler_b.sampling_session_id
    sampler_b.close()
    assert router.pins["sampling_session_id"].get(closed) is None
    with pytest.raises(mint.NotFoundError, match=closed):
        sampler_b.sample(PROMPT, 1, greedy).result()
    runs = {r.id for r in a.create_rest_client().list_training_runs(limit=100).result().training_runs}
    assert {ta.model_id, tb.model_id} <= runs  # one store behind both workers
    with pytest.raises(mint.NotFoundError):  # an id no worker issued
        a.create_rest_client().get_training_run("no-such-run").result()
    b.close()
    assert router.pins["session_id"].get(b.session_id) is None


def test_tinker_sdk_through_the_router(cluster, tiny_llama):
    tinker = pytest.importorskip("tinker")
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    url, router = cluster
    service = tinker.ServiceClient(base_url=url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=0).result()
    datum = tinker.types.Datum(model_input=tinker.types.ModelInput.from_ints([1, 40, 41, 42]),
                               loss_fn_inputs={"target_tokens": [40, 41, 42, 43], "weights": [1.0] * 4})
    losses = []
    for _ in range(3):
        fb = trainer.forward_backward([datum], "cross_entropy")  # protobuf body: routed by its model_id
        trainer.optim_step(tinker.types.AdamParams(learning_rate=5e-2)).result()
        losses.append(fb.result().metrics["loss:sum"])
    assert losses[-1] < losses[0]
    sampler = trainer.save_weights_and_get_sampling_client().result()
    out = sampler.sample(tinker.types.ModelInput.from_ints(PROMPT), 1, tinker.types.SamplingParams(max_tokens=3)).result()
    assert len(out.sequences[0].tokens) == 3
    service.close("success").result()
