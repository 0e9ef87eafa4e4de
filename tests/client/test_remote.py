"""The remote clients (mint.ServiceClient(base_url=...)) against a real server in a thread: the same
scenarios as the in-process client tests, with results equal to the in-process ones (fp32, same seeds)."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

import mint
from mint import types
from mint.client.remote import RemoteFuture, RemoteSamplingClient, RemoteServiceClient, RemoteTrainingClient
from tests.client.test_training import make_data
from tests.server.running import ALICE, BOB, KEYS, RunningServer

ADAM = types.AdamParams(learning_rate=1e-2, weight_decay=0.01)
PROMPT = [1, 40, 41, 42, 43, 44]


@pytest.fixture(scope="module")
def base_url(tiny_llama):
    from mint.server.auth import load_keys
    from mint.server.config import ServerConfig

    with RunningServer(ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None))) as server:
        yield server.url


@pytest.fixture(scope="module")
def remote(base_url):
    return mint.ServiceClient(base_url=base_url, api_key=ALICE)


def train(trainer, steps: int, seed: int) -> list[float]:
    losses = []
    for i in range(steps):
        fb = trainer.forward_backward(make_data(3, seed=seed + i))
        trainer.optim_step(ADAM)
        losses.append(fb.result().metrics["loss:sum"])
    return losses


def test_selection_by_argument_and_environment(base_url, monkeypatch):
    assert isinstance(mint.ServiceClient(base_url=base_url, api_key=ALICE), RemoteServiceClient)
    monkeypatch.setenv("MINT_BASE_URL", base_url)
    monkeypatch.setenv("MINT_API_KEY", BOB)
    from_env = mint.ServiceClient()
    assert isinstance(from_env, RemoteServiceClient) and isinstance(from_env, mint.ServiceClient)
    assert from_env.api_key == BOB
    monkeypatch.delenv("MINT_BASE_URL")
    assert type(mint.ServiceClient()) is mint.ServiceClient  # in-process stays the default
    with pytest.raises(mint.PermissionDeniedError):
        mint.ServiceClient(base_url=base_url, api_key="not-a-key-at-all")
    with pytest.raises(mint.BadRequestError, match="base_url"):
        mint.ServiceClient(base_url="ftp://example.org")


def test_training_and_sampling_equal_in_process(remote, tiny_llama):
    """The same seed and data give the same losses, logprobs, weights and sampled tokens remotely."""
    local = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    far = remote.create_lora_training_client(base_model=tiny_llama, rank=4, seed=7)
    assert isinstance(far, RemoteTrainingClient) and isinstance(far, mint.TrainingClient)
    assert far.model_id != local.model_id
    for i in range(2):
        data = make_data(3, seed=40 + i)
        a, b = local.forward_backward(data), far.forward_backward(data)
        assert isinstance(b, RemoteFuture)
        local.optim_step(ADAM), far.optim_step(ADAM)
        a, b = a.result(), b.result()
        assert b.metrics["loss:sum"] == pytest.approx(a.metrics["loss:sum"], rel=1e-6, abs=1e-6)
        for x, y in zip(a.loss_fn_outputs, b.loss_fn_outputs):
            torch.testing.assert_close(y["logprobs"].to_torch(), x["logprobs"].to_torch(), rtol=1e-5, atol=1e-5)
    probe = make_data(2, seed=99)
    fa, fb = local.forward(probe).result(), far.forward(probe).result()
    assert fb.metrics["loss:sum"] == pytest.approx(fa.metrics["loss:sum"], rel=1e-6, abs=1e-6)

    params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=5)
    s_local = local.save_weights_and_get_sampling_client("eq")
    s_far = far.save_weights_and_get_sampling_client("eq")
    assert isinstance(s_far, RemoteSamplingClient)
    assert s_far.model_path == f"mint://{far.model_id}/sampler_weights/eq"
    a, b = s_local.sample(PROMPT, 3, params).result(), s_far.sample(PROMPT, 3, params).result()
    assert [s.tokens for s in b.sequences] == [s.tokens for s in a.sequences]
    for x, y in zip(a.sequences, b.sequences):
        torch.testing.assert_close(torch.tensor(y.logprobs), torch.tensor(x.logprobs), rtol=1e-5, atol=1e-5)
        assert x.stop_reason == y.stop_reason
    greedy = types.SamplingParams(max_tokens=6, temperature=0.0)
    assert s_far.sample(types.ModelInput.from_ints(PROMPT), 1, greedy).result().sequences[0].tokens == \
        s_local.sample(PROMPT, 1, greedy).result().sequences[0].tokens
    lp_a, lp_b = s_local.compute_logprobs(PROMPT).result(), s_far.compute_logprobs(PROMPT).result()
    assert lp_b[0] is None and len(lp_b) == len(lp_a)
    torch.testing.assert_close(torch.tensor(lp_b[1:]), torch.tensor(lp_a[1:]), rtol=1e-5, atol=1e-5)
    with_prompt = s_far.sample(PROMPT, 1, params, include_prompt_logprobs=True, topk_prompt_logprobs=3).result()
    assert with_prompt.prompt_logprobs[0] is None and len(with_prompt.topk_prompt_logprobs[1]) == 3
    # A sampler from the path, and the bare base model.
    again = remote.create_sampling_client(model_path=s_far.model_path)
    assert again.sample(PROMPT, 3, params).result().sequences[0].tokens == a.sequences[0].tokens
    assert again.base_model == tiny_llama
    base_far = remote.create_sampling_client(base_model=tiny_llama)
    base_local = mint.ServiceClient().create_sampling_client(base_model=tiny_llama)
    assert base_far.sample(PROMPT, 2, params).result().sequences[1].tokens == \
        base_local.sample(PROMPT, 2, params).result().sequences[1].tokens
    info = far.get_info()
    assert info.model_id == far.model_id and info.lora_rank == 4
    tok = far.get_tokenizer()
    assert tok.decode(tok.encode("abc")) == "abc" and s_far.get_tokenizer() is tok


def test_custom_loss_equals_in_process(remote, tiny_llama):
    """forward_backward_custom (forward, loss here, linear-weights backward) gives the in-process result."""
    data = make_data(2, seed=6)

    def loss_fn(batch, logprobs):  # nonlinear and cross-datum
        return (torch.cat(logprobs).exp().sum() - 1.0) ** 2 + logprobs[0].mean() * logprobs[1].max(), {"n": 2.0}

    results = []
    for service in (mint.ServiceClient(), remote):
        trainer = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=2)
        train(trainer, 1, seed=300)  # make B non-zero
        out = trainer.forward_backward_custom(data, loss_fn).result()
        trainer.optim_step(ADAM).result()
        after = trainer.forward(make_data(2, seed=7)).result().metrics["loss:sum"]
        results.append((out, after))
    (a, after_a), (b, after_b) = results
    assert b.metrics["loss:sum"] == pytest.approx(a.metrics["loss:sum"], rel=1e-6)
    assert b.metrics["n"] == 2.0
    for x, y in zip(a.loss_fn_outputs, b.loss_fn_outputs):
        torch.testing.assert_close(y["logprobs"].to_torch(), x["logprobs"].to_torch(), rtol=1e-6, atol=1e-6)
    assert after_b == pytest.approx(after_a, rel=1e-5)  # the same gradient went into the step


def test_errors_are_the_in_process_types(remote, tiny_llama):
    trainer = remote.create_lora_training_client(base_model=tiny_llama, rank=2, seed=0)
    train(trainer, 1, seed=5)
    probe = make_data(2, seed=8)
    before = trainer.forward(probe).result().metrics["loss:sum"]
    bad = make_data(3, seed=3)
    bad[1] = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
                         loss_fn_inputs={"target_tokens": [6, 7, 8], "weights": [1.0] * 3})
    with pytest.raises(mint.BadRequestError) as err:
        trainer.forward_backward(bad).result()
    assert "data[1]" in str(err.value) and "target_tokens" in str(err.value)
    assert err.value.field == "data[1].loss_fn_inputs.target_tokens" and str(err.value).count("data[1]") == 1
    tokens = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 10_000]),
                         loss_fn_inputs={"target_tokens": [6, 7, 8]})
    with pytest.raises(mint.BadRequestError, match=r"data\[0\]\.model_input"):
        trainer.forward([tokens]).result()
    with pytest.raises(mint.BadRequestError, match="loss_fn"):
        trainer.forward_backward(make_data(1, seed=0), "nonsense").result()
    with pytest.raises(mint.BadRequestError, match="learning_rate"):
        trainer.optim_step({"learning_rate": -1.0}).result()
    with pytest.raises(mint.BadRequestError, match="rank"):
        remote.create_lora_training_client(base_model=tiny_llama, rank=65)
    with pytest.raises(mint.BadRequestError, match="base_model"):
        remote.create_lora_training_client(base_model="no-such-org/no-such-model-xyz")
    with pytest.raises(mint.BadRequestError, match="name"):
        trainer.save_state("../x").result()
    with pytest.raises(mint.NotFoundError):
        trainer.load_state(f"mint://{trainer.model_id}/weights/missing").result()
    with pytest.raises(mint.BadRequestError, match="model_path"):
        remote.create_sampling_client(model_path="mint://../etc/passwd")
    with pytest.raises(mint.NotFoundError):
        remote.create_sampling_client(model_path="mint://nosuchrun/sampler_weights/x")
    def user_bug(batch, logprobs):
        raise ValueError("user bug")

    with pytest.raises(ValueError, match="user bug"):
        trainer.forward_backward_custom(make_data(1, seed=1), user_bug).result()
    with pytest.raises(mint.BadRequestError, match="loss_fn"):
        trainer.forward_backward_custom(make_data(1, seed=1), lambda b, lp: (torch.tensor(1.0), {})).result()
    sampler = remote.create_sampling_client(base_model=tiny_llama)
    with pytest.raises(mint.BadRequestError, match="sampling_params"):
        sampler.sample(PROMPT, 1, None).result()
    with pytest.raises(mint.BadRequestError, match="max_tokens"):
        sampler.sample(PROMPT, 1, {"temperature": 1.0}).result()
    with pytest.raises(mint.BadRequestError, match="prompt"):
        sampler.sample([1, 2, 100_000], 1, types.SamplingParams(max_tokens=2)).result()
    with pytest.raises(mint.BadRequestError, match="num_samples"):
        sampler.sample(PROMPT, 0, types.SamplingParams(max_tokens=2)).result()
    with pytest.raises(mint.BadRequestError, match="include_prompt_logprobs"):
        sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=2), include_prompt_logprobs="yes").result()
    with pytest.raises(mint.BadRequestError, match="topk_prompt_logprobs"):
        sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=2), topk_prompt_logprobs=10**6).result()
    assert trainer.forward(probe).result().metrics["loss:sum"] == before  # the failed calls changed nothing


def test_resume_from_state_equals_uninterrupted(remote, tiny_llama):
    a = remote.create_lora_training_client(base_model=tiny_llama, rank=4, seed=1)
    train(a, 2, seed=100)
    saved = a.save_state("two").result()
    assert saved.path == f"mint://{a.model_id}/weights/two"
    (loss_a,) = train(a, 1, seed=200)
    b = remote.create_training_client_from_state_with_optimizer(saved.path, user_metadata={"from": "two"})
    assert b.config.rank == 4 and b.model_id != a.model_id
    (loss_b,) = train(b, 1, seed=200)
    assert loss_b == loss_a
    c = remote.create_training_client_from_state(saved.path)
    c.load_state_with_optimizer(saved.path.replace("mint://", "tinker://")).result()
    assert train(c, 1, seed=200) == [loss_a]
    assert a.forward(make_data(2, seed=9)).result().metrics["loss:sum"] == \
        b.forward(make_data(2, seed=9)).result().metrics["loss:sum"]


def test_rest_client_and_other_users(remote, base_url, tiny_llama):
    trainer = remote.create_lora_training_client(base_model=tiny_llama, rank=2, seed=0, user_metadata={"k": "v"})
    state = trainer.save_state("s1").result().path
    sampler = trainer.save_weights_for_sampler("w1").result().path
    rest = remote.create_rest_client()
    run = rest.get_training_run(trainer.model_id).result()
    assert run.id == trainer.model_id and run.owner == "alice" and run.user_metadata == {"k": "v"}
    assert {c.path for c in run.checkpoints} == {state, sampler}
    assert rest.get_training_run_by_tinker_path(state).result().id == trainer.model_id
    assert trainer.model_id in [r.id for r in rest.list_training_runs(limit=50).result().training_runs]
    assert [c.path for c in rest.list_checkpoints(trainer.model_id).result().checkpoints] == [state, sampler]
    assert rest.list_user_checkpoints(limit=1).result().checkpoints[0].path == sampler
    info = rest.get_weights_info(state).result()
    assert (info.base_model, info.lora_rank, info.checkpoint_type) == (tiny_llama, 2, "training")
    with pytest.raises(mint.BadRequestError, match="limit"):
        rest.list_training_runs(limit=0).result()
    with pytest.raises(mint.BadRequestError, match="checkpoint_id"):
        rest.delete_checkpoint(trainer.model_id, "bogus").result()

    bob = mint.ServiceClient(base_url=base_url, api_key=BOB)
    bob_rest = bob.create_rest_client()
    with pytest.raises(mint.NotFoundError):
        bob_rest.get_training_run(trainer.model_id).result()
    with pytest.raises(mint.NotFoundError):
        bob.create_sampling_client(model_path=sampler)  # private
    rest.publish_checkpoint_from_tinker_path(sampler).result()
    with pytest.raises(mint.ConflictError):
        rest.publish_checkpoint(trainer.model_id, "sampler_weights/w1").result()
    shared = bob_rest.get_training_run(trainer.model_id, access_scope="accessible").result()
    assert [c.path for c in shared.checkpoints] == [sampler]
    out = bob.create_sampling_client(model_path=sampler).sample(PROMPT, 1, types.SamplingParams(max_tokens=3, seed=1))
    assert len(out.result().sequences[0].tokens) == 3  # public: loadable by bob
    with pytest.raises(mint.NotFoundError):  # exactly as if it did not exist
        bob_rest.delete_checkpoint(sampler).result()
    with pytest.raises(mint.NotFoundError):  # exactly as if it did not exist
        bob.create_training_client_from_state(state)  # private training state
    rest.unpublish_checkpoint_from_tinker_path(sampler).result()
    rest.set_checkpoint_ttl_from_tinker_path(state, 3600).result()
    (c,) = [c for c in rest.list_checkpoints(trainer.model_id).result().checkpoints if c.path == state]
    assert c.expires_at is not None
    rest.delete_checkpoint(trainer.model_id, "weights/s1").result()
    rest.delete_checkpoint_from_tinker_path(sampler).result()
    assert rest.list_checkpoints(trainer.model_id).result().checkpoints == []


def test_async_twins_and_future_semantics(remote, tiny_llama, monkeypatch):
    trainer = remote.create_lora_training_client(base_model=tiny_llama, rank=2, seed=4)

    async def run():
        fut = await trainer.forward_backward_async(make_data(2, seed=4))
        out = await fut
        step = await (await trainer.optim_step_async(types.AdamParams()))
        sampler = await trainer.save_weights_and_get_sampling_client_async("async")
        sampled = await sampler.sample_async(PROMPT, 2, types.SamplingParams(max_tokens=3, seed=0))
        lps = await sampler.compute_logprobs_async(PROMPT)
        run = await remote.create_rest_client().get_training_run_async(trainer.model_id)
        return out, step, sampled, lps, run

    out, step, sampled, lps, run = asyncio.run(run())
    assert "loss:sum" in out.metrics and step is not None
    assert len(sampled.sequences) == 2 and len(lps) == len(PROMPT) and run.id == trainer.model_id
    # done() does not block on an unfinished request; result(timeout) raises TimeoutError. The server runs
    # in this process: each decode step is slowed so that the request surely outlives the short timeout.
    from mint.engine.sampler import DecodeBatch

    real_step = DecodeBatch.step

    def slow_step(self):
        time.sleep(0.01)
        return real_step(self)

    monkeypatch.setattr(DecodeBatch, "step", slow_step)
    sampler = remote.create_sampling_client(base_model=tiny_llama)
    long = sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=40, temperature=1.0, seed=1))
    with pytest.raises(TimeoutError):
        long.result(timeout=0.01)
    assert len(long.result(timeout=120).sequences[0].tokens) == 40 and long.done()


def test_close_ends_the_session_and_frees_its_adapters(base_url, tiny_llama):
    with mint.ServiceClient(base_url=base_url, api_key=ALICE) as service:
        trainer = service.create_lora_training_client(base_model=tiny_llama, rank=1, seed=0)
        sampler = trainer.save_weights_and_get_sampling_client("closing")
        trainer.forward(make_data(1, seed=0)).result()
    with pytest.raises(mint.NotFoundError):
        trainer.forward(make_data(1, seed=0)).result()
    with pytest.raises(mint.NotFoundError):
        sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=1)).result()
    # The checkpoint stays: a new session can sample from it.
    again = mint.ServiceClient(base_url=base_url, api_key=ALICE).create_sampling_client(model_path=sampler.model_path)
    assert len(again.sample(PROMPT, 1, types.SamplingParams(max_tokens=2)).result().sequences[0].tokens) == 2


def test_heartbeat_keeps_the_session_alive(tiny_llama, monkeypatch):
    """The server ends sessions that go silent for session_ttl_s; the client's heartbeat prevents it."""
    from mint.client.remote import session as session_module
    from mint.server.auth import load_keys
    from mint.server.config import ServerConfig

    monkeypatch.setattr(session_module, "HEARTBEAT_SECONDS", 0.2)
    config = ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None), session_ttl_s=1.5)
    with RunningServer(config) as server:
        alive = mint.ServiceClient(base_url=server.url, api_key=ALICE)
        silent = mint.ServiceClient(base_url=server.url, api_key=ALICE)
        silent._session._stop.set()  # no more heartbeats from this one
        kept = alive.create_lora_training_client(base_model=tiny_llama, rank=1, seed=0)
        lost = silent.create_lora_training_client(base_model=tiny_llama, rank=1, seed=0)
        time.sleep(3.0)
        mint.ServiceClient(base_url=server.url, api_key=ALICE)  # creating a session sweeps silent ones
        assert kept.forward(make_data(1, seed=0)).result().metrics["loss:sum"] > 0
        with pytest.raises(mint.NotFoundError):
            lost.forward(make_data(1, seed=0)).result()


def test_sampling_clients_release_their_server_sessions(remote, base_url, tiny_llama):
    """close() (or garbage collection) of a remote SamplingClient closes its sampler session on the server."""
    import gc

    import httpx

    def exists(sampler_id: str) -> bool:
        r = httpx.get(f"{base_url}/api/v1/samplers/{sampler_id}", headers={"X-API-Key": ALICE})
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200

    trainer = remote.create_lora_training_client(base_model=tiny_llama, rank=1, seed=0)
    closed = trainer.save_weights_and_get_sampling_client("release-closed")
    dropped = trainer.save_weights_and_get_sampling_client("release-dropped")
    ids = closed.sampling_session_id, dropped.sampling_session_id
    assert all(exists(i) for i in ids)
    closed.close()
    assert not exists(ids[0])
    with pytest.raises(mint.NotFoundError, match=ids[0]):
        closed.sample(PROMPT, 1, types.SamplingParams(max_tokens=1)).result()
    del dropped
    gc.collect()
    deadline = time.monotonic() + 10
    while exists(ids[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not exists(ids[1])
    assert trainer.forward(make_data(1, seed=0)).result().metrics["loss:sum"] > 0  # the session lives on
