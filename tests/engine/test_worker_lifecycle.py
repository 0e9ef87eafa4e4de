"""The engine's worker thread: it exits when idle (taking its OpenMP pool with it) and comes back on demand."""

from __future__ import annotations

import threading
import time

import pytest

import mint
from mint import types
from mint.engine.engine import Engine
from mint.engine.models import load_base_model


def wait_until_idle(engine: Engine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.busy, "the worker did not exit while idle"


def test_worker_exits_when_idle_and_restarts_for_the_next_request(tiny_llama):
    trainer = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=4, seed=0)
    engine = trainer._engine
    engine.idle_exit_s = 0.05
    datum = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7, 8]),
                        loss_fn_inputs={"target_tokens": [6, 7, 8, 9], "weights": [1.0] * 4})
    losses = []
    for _ in range(3):
        wait_until_idle(engine)
        assert f"mint-engine-{engine.base_model}" not in {t.name for t in threading.enumerate()}
        losses.append(trainer.forward_backward([datum]).result().metrics["loss:sum"])
        trainer.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert losses[0] > losses[1] > losses[2]  # the optimizer state survived the worker's exits
    engine.idle_exit_s = 1.0


def test_requests_racing_the_idle_exit_are_never_lost(tiny_llama):
    engine = Engine(load_base_model(tiny_llama))
    engine.idle_exit_s = 0.001
    try:
        for i in range(200):
            assert engine.submit(lambda x: x + 1, i).result(timeout=10) == i + 1
            if i % 7 == 0:
                time.sleep(0.002)  # sometimes past the idle timeout
    finally:
        engine.close()


def test_close_finishes_queued_work_and_later_requests_fail(tiny_llama):
    engine = Engine(load_base_model(tiny_llama))
    slow = engine.submit(time.sleep, 0.1)
    engine.close()
    assert slow.done() and slow.exception() is None
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(lambda: 1).result(timeout=1)
    engine.close()  # twice is fine
