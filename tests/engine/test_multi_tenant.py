"""Several training clients on one base model: batched passes give exactly what each client gets alone."""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

import mint
from mint import types


def make_data(seed: int, n: int = 3) -> list[types.Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        tokens = [rng.randrange(3, 250) for _ in range(rng.randrange(6, 20))]
        data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                                loss_fn_inputs={"target_tokens": tokens[1:],
                                                "weights": [rng.choice([0.0, 1.0]) for _ in tokens[1:]]}))
    return data


def weights(trainer) -> dict[str, torch.Tensor]:
    engine = trainer._engine
    return engine.submit(engine.pool.export, engine.adapter(trainer.model_id).slot).result()


def run_steps(trainers, steps, concurrent: bool):
    """Each trainer does ``steps`` fb + optim steps on its own data; returns per-trainer losses."""
    losses = {i: [] for i in range(len(trainers))}
    adams = [types.AdamParams(learning_rate=1e-3 * (i + 1), weight_decay=0.01 * i) for i in range(len(trainers))]
    if not concurrent:
        for i, t in enumerate(trainers):
            for s in range(steps):
                losses[i].append(t.forward_backward(make_data(100 * i + s)).result().metrics["loss:sum"])
                t.optim_step(adams[i]).result()
        return losses

    def worker(i, t):
        for s in range(steps):
            fb = t.forward_backward(make_data(100 * i + s))
            opt = t.optim_step(adams[i])
            losses[i].append(fb.result().metrics["loss:sum"])
            opt.result()

    threads = [threading.Thread(target=worker, args=(i, t)) for i, t in enumerate(trainers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    return losses


@pytest.mark.parametrize("ranks", [(4, 4, 4), (2, 8, 5)])
def test_concurrent_clients_equal_clients_alone(tiny_llama, ranks):
    service = mint.ServiceClient()
    alone = [service.create_lora_training_client(base_model=tiny_llama, rank=r, seed=i) for i, r in enumerate(ranks)]
    together = [service.create_lora_training_client(base_model=tiny_llama, rank=r, seed=i) for i, r in enumerate(ranks)]
    l_alone = run_steps(alone, 3, concurrent=False)
    l_together = run_steps(together, 3, concurrent=True)
    for i in range(len(ranks)):
        assert l_together[i] == pytest.approx(l_alone[i], rel=1e-5, abs=1e-5)
        wa, wt = weights(alone[i]), weights(together[i])
        for name in wa:
            torch.testing.assert_close(wt[name], wa[name], rtol=1e-5, atol=1e-5, msg=name)


def test_pending_requests_are_batched(tiny_llama):
    """Requests queued while the engine is busy run as one forward/backward pass and one Adam call."""
    service = mint.ServiceClient()
    trainers = [service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=i) for i in range(3)]
    engine = trainers[0]._engine
    passes = []
    handle = engine.model.model.layers[0].register_forward_hook(lambda m, i, o: passes.append(tuple(i[0].shape[:2])))
    try:
        gate = engine.submit(time.sleep, 0.3)
        fbs = [t.forward_backward(make_data(i, n=2)) for i, t in enumerate(trainers)]
        opts = [t.optim_step(types.AdamParams()) for t in trainers]
        gate.result()
        outs = [f.result() for f in fbs]
        [o.result() for o in opts]
    finally:
        handle.remove()
    # one pass over the 3 x 2 datums, packed back to back in one row without padding
    tokens = sum(len(d.model_input.to_ints()) for i in range(3) for d in make_data(i, n=2))
    assert passes == [(1, tokens)]
    assert [len(o.loss_fn_outputs) for o in outs] == [2, 2, 2]


def test_bad_request_in_a_batch_fails_alone(tiny_llama):
    service = mint.ServiceClient()
    good, bad = (service.create_lora_training_client(base_model=tiny_llama, rank=4, seed=i) for i in range(2))
    engine = good._engine
    broken = make_data(5, n=2)
    broken[1] = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]),
                            loss_fn_inputs={"target_tokens": [6, 7], "weights": [1.0, 1.0]})
    gate = engine.submit(time.sleep, 0.2)
    f_good = good.forward_backward(make_data(6))
    f_bad = bad.forward_backward(broken)
    gate.result()
    assert "loss:sum" in f_good.result().metrics
    with pytest.raises(mint.BadRequestError, match=r"data\[1\]"):
        f_bad.result()
    state = engine.adapter(bad.model_id).optimizer
    assert not state.has_grads and all(not g.any() for g in state.grads)
