"""save_state / load_state / load_state_with_optimizer and clients created from a saved state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mint
from mint import types
from tests.adapter_access import engine_weights
from tests.client.test_training import make_data

ADAM = types.AdamParams(learning_rate=1e-2, weight_decay=0.01)


def optimizer_state(trainer) -> dict[str, torch.Tensor]:
    engine = trainer._engine
    return engine.submit(engine.adapter(trainer.model_id).optimizer.state_tensors).result()


def train(trainer, steps: int, seed: int) -> list[float]:
    losses = []
    for i in range(steps):
        fb = trainer.forward_backward(make_data(3, seed=seed + i))
        trainer.optim_step(ADAM).result()
        losses.append(fb.result().metrics["loss:sum"])
    return losses


@pytest.fixture
def service():
    return mint.ServiceClient()


def release(*trainers):
    for t in trainers:
        t._engine.submit(t._engine.release_training_adapter, t.model_id).result()


def test_resume_with_optimizer_equals_uninterrupted_run_and_without_resets(service, tiny_llama):
    """The case: after save_state + load_state_with_optimizer the next step gives the same loss and weights
    as a run that never stopped; load_state without the optimizer really resets the Adam state."""
    a = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=1)
    train(a, 3, seed=100)
    saved = a.save_state("three").result()
    assert saved.path == f"mint://{a.model_id}/weights/three"
    saved_weights, saved_optim = engine_weights(a), optimizer_state(a)
    assert int(saved_optim["steps"].min()) == 3 and any(float(v.abs().max()) > 0 for v in saved_optim.values())
    (loss_a,) = train(a, 1, seed=200)  # the run that never stopped
    weights_a = engine_weights(a)

    # A new client from the state, and an existing client of the same shape that loads it.
    b = service.create_training_client_from_state_with_optimizer(saved.path)
    c = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=9)
    train(c, 1, seed=300)  # give c different weights and moments first
    c.load_state_with_optimizer(saved.path).result()
    for resumed in (b, c):
        assert resumed.model_id != a.model_id
        state = optimizer_state(resumed)
        assert all(torch.equal(state[k], saved_optim[k]) for k in saved_optim)
        (loss,) = train(resumed, 1, seed=200)
        assert loss == loss_a
        for name, w in engine_weights(resumed).items():
            assert torch.equal(w, weights_a[name]), name

    # Weights only: the moments and step counts are zero, and the next step is AdamW's *first* step.
    d = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=9)
    train(d, 2, seed=400)
    d.load_state(saved.path).result()
    state = optimizer_state(d)
    assert all(float(v.abs().max()) == 0 for v in state.values())
    assert all(torch.equal(w, saved_weights[n]) for n, w in engine_weights(d).items())
    d.forward_backward(make_data(3, seed=200)).result()
    engine = d._engine
    adapter = engine.adapter(d.model_id)
    grads = engine.submit(lambda: {n: g.clone() for n, g in zip(adapter.optimizer.names, adapter.optimizer.grads)}).result()
    d.optim_step(ADAM).result()
    after = engine_weights(d)
    for name, w0 in saved_weights.items():  # independent reference: torch.optim.AdamW from fresh state
        p = torch.nn.Parameter(w0.clone())
        opt = torch.optim.AdamW([p], lr=ADAM.learning_rate, betas=(ADAM.beta1, ADAM.beta2), eps=ADAM.eps,
                                weight_decay=ADAM.weight_decay)
        p.grad = grads[name].clone()
        opt.step()
        torch.testing.assert_close(after[name], p.detach(), rtol=1e-5, atol=1e-7, msg=name)
    assert any(not torch.equal(after[n], weights_a[n]) for n in after)  # differs from the resumed run
    release(a, b, c, d)


_RESUME = """
import json, sys
import torch
torch.set_num_threads(int(sys.argv[3]))
import mint
from mint import types
data = json.load(open(sys.argv[2]))
trainer = mint.ServiceClient().create_training_client_from_state_with_optimizer(sys.argv[1])
for step in data:
    batch = [types.Datum(model_input=types.ModelInput.from_ints(t), loss_fn_inputs={"target_tokens": y, "weights": w})
             for t, y, w in step]
    trainer.forward_backward(batch).result()
    trainer.optim_step(types.AdamParams(**json.loads(sys.argv[5]))).result()
engine = trainer._engine
weights = engine.submit(engine.pool.export, engine.adapter(trainer.model_id).slot).result()
torch.save(weights, sys.argv[4])
"""


def test_exact_resume_in_a_new_process(service, tiny_llama, tmp_path):
    """Train 3 steps, save, resume in a fresh process for 2 more: bitwise equal to 5 uninterrupted steps."""
    a = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=2, train_unembed=False)
    train(a, 3, seed=500)
    path = a.save_state("resume-me").result().path
    train(a, 2, seed=503)
    expected = engine_weights(a)
    steps = []
    for i in range(2):
        steps.append([
            (d.model_input.to_ints(), d.loss_fn_inputs["target_tokens"].to_torch().tolist(),
             d.loss_fn_inputs["weights"].to_torch().tolist())
            for d in make_data(3, seed=503 + i)
        ])
    (tmp_path / "data.json").write_text(json.dumps(steps))
    out = tmp_path / "weights.pt"
    env = {**os.environ, "PYTHONPATH": str(Path(mint.__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", _RESUME, path, str(tmp_path / "data.json"), str(torch.get_num_threads()), str(out),
         ADAM.model_dump_json()],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out)
    assert set(got) == set(expected)
    for name, w in expected.items():
        assert torch.equal(got[name], w), name
    release(a)


def test_errors_leave_the_client_unchanged(service, tiny_llama):
    a = service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=3)
    train(a, 1, seed=600)
    state_path = a.save_state("s").result().path
    sampler_path = a.save_weights_for_sampler("w").result().path
    other = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=3)
    train(other, 1, seed=601)
    before, before_optim = engine_weights(other), optimizer_state(other)
    for bad_name in ("../x", "a/b", ""):
        with pytest.raises(mint.BadRequestError, match="name"):
            a.save_state(bad_name).result()
    with pytest.raises(mint.BadRequestError, match="rank 4") as err:
        other.load_state_with_optimizer(state_path).result()
    assert err.value.field == "path"
    with pytest.raises(mint.BadRequestError, match="path"):
        a.load_state_with_optimizer(sampler_path).result()  # a sampler checkpoint has no optimizer state
    with pytest.raises(mint.BadRequestError, match="path"):
        a.load_state("mint://x/other/y").result()
    with pytest.raises(mint.NotFoundError):
        a.load_state(f"mint://{a.model_id}/weights/missing").result()
    with pytest.raises(mint.NotFoundError):
        service.create_training_client_from_state(f"mint://{a.model_id}/weights/missing")
    assert all(torch.equal(w, before[n]) for n, w in engine_weights(other).items())
    assert all(torch.equal(v, before_optim[k]) for k, v in optimizer_state(other).items())
    # tinker:// paths work, and a sampler checkpoint loads weights only.
    a.load_state(state_path.replace("mint://", "tinker://")).result()
    a.load_state(sampler_path).result()
    release(a, other)


def test_from_state_takes_the_checkpoint_shape(service, tiny_llama):
    a = service.create_lora_training_client(base_model=tiny_llama, rank=3, seed=4, train_mlp=False)
    train(a, 2, seed=700)
    path = a.save_state("shape").result().path
    b = service.create_training_client_from_state(path, user_metadata={"from": "shape"})
    assert b.config.rank == 3 and not b.config.train_mlp and b.config.train_attn
    assert all(torch.equal(w, engine_weights(a)[n]) for n, w in engine_weights(b).items())
    assert all(float(v.abs().max()) == 0 for v in optimizer_state(b).values())
    run = service.create_rest_client().get_training_run(b.model_id).result()
    assert run.user_metadata == {"from": "shape"} and run.lora_rank == 3
    release(a, b)


def test_damaged_state_raises_and_marks_the_run(service, tiny_llama):
    from mint import storage

    a = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=5)
    path = a.save_state("dmg").result().path
    row = storage.store().get_checkpoint(a.model_id, "weights", "dmg")
    file = storage.checkpoints.folder_of(row) / row.file
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))
    before = engine_weights(a)
    with pytest.raises(mint.CheckpointCorruptedError, match="damaged"):
        a.load_state_with_optimizer(path).result()
    assert all(torch.equal(w, before[n]) for n, w in engine_weights(a).items())
    assert service.create_rest_client().get_training_run(a.model_id).result().corrupted is True
    release(a)


def test_async_twins(service, tiny_llama):
    a = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=6)

    async def main():
        saved = await (await a.save_state_async("async"))
        await (await a.load_state_async(saved.path))
        loaded = await (await a.load_state_with_optimizer_async(saved.path))
        b = await service.create_training_client_from_state_async(saved.path)
        c = await service.create_training_client_from_state_with_optimizer_async(saved.path)
        return saved, loaded, b, c

    saved, loaded, b, c = asyncio.run(main())
    assert loaded.path == saved.path
    release(a, b, c)


def test_overwriting_a_loaded_sampler_checkpoint(service, tiny_llama):
    """Old SamplingClients keep the weights they loaded; new ones get the new file; slots are freed."""
    import gc

    a = service.create_lora_training_client(base_model=tiny_llama, rank=2, seed=7)
    train(a, 1, seed=800)
    old_weights = engine_weights(a)
    old = a.save_weights_and_get_sampling_client("live")
    train(a, 1, seed=801)
    new = a.save_weights_and_get_sampling_client("live")
    engine = a._engine
    assert old._slot != new._slot
    for client, expected in ((old, old_weights), (new, engine_weights(a))):
        got = engine.submit(engine.pool.export, client._slot).result()
        assert all(torch.equal(got[n], w) for n, w in expected.items())
    old_slot, new_slot = old._slot, new._slot
    del old, new, client
    gc.collect()
    engine.submit(lambda: None).result()
    assert old_slot not in engine.pool and new_slot not in engine.pool
    release(a)
