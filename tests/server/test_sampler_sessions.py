"""Sampler sessions are bounded and releasable: DELETE /samplers/{id} closes one (owner only), a user at
``max_samplers_per_user`` has the least recently used one closed instead of getting an error, and the
adapter-pool slots of closed samplers are freed, so an RL loop that makes a new sampler every step runs
indefinitely in one session (stock Tinker SDK and mint's remote client alike) with bounded memory."""

from __future__ import annotations

import gc
import os
import time

import pytest

import mint
from mint import types
from mint.server import ServerConfig
from mint.server.auth import load_keys
from tests.client.test_training import make_data
from tests.server.http import call, client, new_model
from tests.server.running import ALICE, BOB, KEYS, RunningServer

LIMIT = 2
PROMPT = {"chunks": [{"tokens": [5, 6, 7]}]}


@pytest.fixture(scope="module")
def small(tiny_llama):
    """A server allowing each user only LIMIT open sampler sessions."""
    config = ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None), poll_wait_s=2.0,
                          max_samplers_per_user=LIMIT)
    with RunningServer(config) as srv:
        yield srv


def _open(c, session: str, path: str) -> str:
    r = c.post("/create_sampling_session", json={"session_id": session, "model_path": path})
    assert r.status_code == 200, r.text
    return r.json()["sampling_session_id"]


def _sample(c, sampler: str):
    r = c.post("/asample", json={"sampling_session_id": sampler, "num_samples": 1, "prompt": PROMPT,
                                 "sampling_params": {"max_tokens": 2, "seed": 0}})
    if r.status_code != 200:
        return r
    from tests.server.http import wait

    return wait(c, r.json()["request_id"])


def _open_samplers(srv, owner: str) -> int:
    st = srv.app.state.mint
    with st._lock:
        return sum(1 for x in st.samplers.values() if x.owner == owner)


def _resident(srv, base_model: str) -> int:
    """Adapter-pool slots in use on the engine, after the releases already queued have run."""
    eng = srv.app.state.mint.engine_for(base_model)
    for _ in range(3):  # a release can be queued by the completion of an earlier job
        eng.submit(lambda: None).result()
        time.sleep(0.05)
    return eng.pool.num_resident


def test_delete_releases_a_sampler_for_its_owner_only(small, tiny_llama):
    alice, bob = client(small.url, ALICE), client(small.url, BOB)
    session, model = new_model(alice, tiny_llama)
    path = call(alice, "/save_weights_for_sampler", {"model_id": model, "path": "rel"})["path"]
    before = _resident(small, tiny_llama)
    sampler = _open(alice, session, path)
    assert _resident(small, tiny_llama) == before + 1  # the checkpoint's weights took a slot

    # Bob's DELETE of Alice's sampler is answered exactly like one of an id that does not exist.
    theirs, missing = bob.delete(f"/samplers/{sampler}"), bob.delete("/samplers/0123456789abcdef")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {**missing.json(), "detail": missing.json()["detail"].replace("0123456789abcdef", sampler)}
    assert "sampling_session" not in str(_sample(alice, sampler))  # still Alice's, still works

    assert alice.delete(f"/samplers/{sampler}").status_code == 200
    assert _resident(small, tiny_llama) == before  # slot freed
    for r in (alice.get(f"/samplers/{sampler}"), alice.delete(f"/samplers/{sampler}"), _sample(alice, sampler)):
        assert r.status_code == 404 and sampler in r.json()["detail"], r.text


def test_release_waits_for_queued_samples(small, tiny_llama):
    """A sample already queued on a sampler still completes when the sampler is released meanwhile."""
    alice = client(small.url, ALICE)
    session, model = new_model(alice, tiny_llama)
    path = call(alice, "/save_weights_for_sampler", {"model_id": model, "path": "busy"})["path"]
    before = _resident(small, tiny_llama)
    sampler = _open(alice, session, path)
    r = alice.post("/asample", json={"sampling_session_id": sampler, "num_samples": 2, "prompt": PROMPT,
                                     "sampling_params": {"max_tokens": 30, "seed": 0, "temperature": 1.0}})
    assert r.status_code == 200
    assert alice.delete(f"/samplers/{sampler}").status_code == 200
    from tests.server.http import wait

    out = wait(alice, r.json()["request_id"])
    assert [len(s["tokens"]) for s in out["sequences"]] == [30, 30], out
    assert _resident(small, tiny_llama) == before


def test_at_the_limit_the_least_recently_used_sampler_is_evicted(small, tiny_llama):
    alice, bob = client(small.url, ALICE), client(small.url, BOB)
    session, model = new_model(alice, tiny_llama)
    bob_session, bob_model = new_model(bob, tiny_llama)
    bob_path = call(bob, "/save_weights_for_sampler", {"model_id": bob_model, "path": "b"})["path"]
    bob_sampler = _open(bob, bob_session, bob_path)
    paths = [call(alice, "/save_weights_for_sampler", {"model_id": model, "path": f"lru{i}"})["path"] for i in range(3)]
    first, second = _open(alice, session, paths[0]), _open(alice, session, paths[1])
    _sample(alice, first)  # first is now more recently used than second
    third = _open(alice, session, paths[2])  # over the limit: second goes
    assert _open_samplers(small, "alice") == LIMIT
    r = _sample(alice, second)
    assert r.status_code == 404 and r.json()["type"] == "NotFoundError"
    assert second in r.json()["detail"] and "least recently used" in r.json()["detail"]
    for s in (first, third):
        assert len(_sample(alice, s)["sequences"]) == 1
    # Another user's samplers are never evicted by Alice's, and Bob can't tell Alice's evicted id from a random one.
    assert len(_sample(bob, bob_sampler)["sequences"]) == 1
    evicted, missing = bob.get(f"/samplers/{second}"), bob.get("/samplers/0123456789abcdef")
    assert evicted.json()["detail"] == missing.json()["detail"].replace("0123456789abcdef", second)


def test_tinker_sdk_rl_loop_makes_a_sampler_every_step(small, tiny_llama):
    """3x the limit of save_weights_and_get_sampling_client + sample in one session, stock Tinker SDK."""
    tinker = pytest.importorskip("tinker")
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    service = tinker.ServiceClient(base_url=small.url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=0).result()
    before = _resident(small, tiny_llama)
    prompt = tinker.types.ModelInput.from_ints([5, 6, 7])
    for step in range(3 * LIMIT):
        data = [tinker.types.Datum(model_input=tinker.types.ModelInput.from_ints([3, 4, 5, 6]),
                                   loss_fn_inputs={"target_tokens": [4, 5, 6, 7]})]
        trainer.forward_backward(data, "cross_entropy").result()
        trainer.optim_step(tinker.types.AdamParams(learning_rate=1e-2)).result()
        sampler = trainer.save_weights_and_get_sampling_client().result()
        out = sampler.sample(prompt, num_samples=1,
                             sampling_params=tinker.types.SamplingParams(max_tokens=2, seed=step)).result()
        assert len(out.sequences[0].tokens) >= 1
        assert _open_samplers(small, "alice") <= LIMIT
        assert _resident(small, tiny_llama) <= before + LIMIT, step
    service.close("success").result()


def test_remote_client_rl_loop_releases_its_samplers(small, tiny_llama):
    """The same loop through mint's remote client: old samplers are collected (or closed) and their
    sessions released on the server; with eviction too, nothing ever exceeds the limit."""
    service = mint.ServiceClient(base_url=small.url, api_key=ALICE)
    trainer = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=1)
    before = _resident(small, tiny_llama)
    for step in range(3 * LIMIT):
        trainer.forward_backward(make_data(1, seed=step)).result()
        trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        sampler = trainer.save_weights_and_get_sampling_client(f"rl{step}")
        out = sampler.sample([5, 6, 7], 1, types.SamplingParams(max_tokens=2, seed=step)).result()
        assert len(out.sequences[0].tokens) >= 1
        assert _open_samplers(small, "alice") <= LIMIT
        assert _resident(small, tiny_llama) <= before + LIMIT
    # Dropping the samplers releases them on the server (from the session's background thread): the
    # last one, and the one before it (which eviction alone would have left open).
    sid = sampler.sampling_session_id
    del sampler, out
    gc.collect()
    deadline = time.monotonic() + 10
    while _open_samplers(small, "alice") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_samplers(small, "alice") == 0 and sid not in small.app.state.mint.samplers
    assert _resident(small, tiny_llama) <= before
    # close(): released at once; later samples say which sampler is gone.
    with trainer.save_weights_and_get_sampling_client("closed") as sampler:
        assert sampler.sampling_session_id in small.app.state.mint.samplers
    assert sampler.sampling_session_id not in small.app.state.mint.samplers
    with pytest.raises(mint.NotFoundError, match=sampler.sampling_session_id):
        sampler.sample([5, 6], 1, types.SamplingParams(max_tokens=1)).result()
    sampler.close()  # twice is fine
    service.close()
