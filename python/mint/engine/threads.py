"""Running work on a short-lived thread, so the calling thread gets no OpenMP pool from it."""

from __future__ import annotations

import threading
from typing import Any, Callable


def on_fresh_thread(fn: Callable[[], Any], name: str = "mint-fresh") -> Any:
    """``fn()`` run on a new thread that ends with it; returns its result or re-raises its exception here.

    libgomp gives every thread that runs parallel torch ops an OpenMP thread pool of its own for as long as
    the thread lives. While the pools hold more threads than there are cores, libgomp all but stops
    spin-waiting, so every parallel region in the process pays a futex wake-up (measured on 2 cores: small
    elementwise ops 2.5x slower, training steps 30% slower). Heavy one-off work (loading a model, measuring
    the machine) run here leaves the caller's thread without a pool, so the engine's worker stays the only
    thread with one."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
