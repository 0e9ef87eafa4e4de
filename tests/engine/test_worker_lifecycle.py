"""The engine's worker thread: close() finishes queued work, and nothing is accepted after it."""

from __future__ import annotations

import time

import pytest

from mint.engine.engine import Engine
from mint.engine.models import load_base_model


def test_close_finishes_queued_work_and_later_requests_fail(tiny_llama):
    engine = Engine(load_base_model(tiny_llama))
    slow = engine.submit(time.sleep, 0.1)
    engine.close()
    assert slow.done() and slow.exception() is None
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(lambda: 1).result(timeout=1)
    engine.close()  # twice is fine
