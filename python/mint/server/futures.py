"""Server-side request registry: request ids -> the concurrent futures computing their results.

Every asynchronous call (create_model, forward_backward, optim_step, asample, save/load weights) returns a
request id at once; the client then polls ``retrieve_future``. Entries are owned by the user who made the
request (another user's id reads as unknown). Memory stays bounded: at most ``max_pending`` entries at
once (beyond that new requests get 429, which the SDK retries with backoff); a finished result is dropped
``retrieved_grace_s`` after it was first retrieved, and ``result_ttl_s`` after it finished if nobody ever
asks for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable


class RegistryFullError(Exception):
    """Too many requests are pending or unretrieved (HTTP 429)."""


@dataclass
class Entry:
    owner: str
    future: Future
    encode: Callable[[Any], Any] | None = None  # result -> response object (run in the request thread)
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    retrieved: float | None = None


class FutureRegistry:
    """Thread-safe map of request id -> Entry with expiry."""

    def __init__(self, max_pending: int = 4096, result_ttl_s: float = 900.0, retrieved_grace_s: float = 60.0):
        self.max_pending = max_pending
        self.result_ttl_s = result_ttl_s
        self.retrieved_grace_s = retrieved_grace_s
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def reserve(self) -> None:
        """Raise RegistryFullError if no new request can be held (call before starting work).

        Only requests not yet retrieved count: a retrieved result is kept for ``retrieved_grace_s`` so a
        repeated poll still finds it, but busy clients retrieve thousands a minute, and those must not crowd
        out new work. Past ``max_pending`` entries in all, the oldest retrieved ones are dropped early."""
        self.sweep()
        with self._lock:
            held = sum(1 for e in self._entries.values() if e.retrieved is None)
            if held >= self.max_pending:
                raise RegistryFullError(f"{held} requests are pending or unretrieved; retry later")
            excess = len(self._entries) + 1 - self.max_pending
            if excess > 0:
                retrieved = sorted((e.retrieved, rid) for rid, e in self._entries.items() if e.retrieved is not None)
                for _, rid in retrieved[:excess]:
                    del self._entries[rid]

    def add(self, owner: str, future: Future, encode: Callable[[Any], Any] | None = None) -> str:
        """Register ``future`` (already running) for ``owner``; returns its new request id."""
        request_id = uuid.uuid4().hex
        entry = Entry(owner=owner, future=future, encode=encode)
        with self._lock:
            self._entries[request_id] = entry

        def _done(_: Future) -> None:
            entry.finished = time.monotonic()

        future.add_done_callback(_done)
        return request_id

    def get(self, request_id: str, owner: str) -> Entry | None:
        """The entry if it exists and belongs to ``owner``."""
        with self._lock:
            entry = self._entries.get(request_id)
        if entry is None or entry.owner != owner:
            return None
        return entry

    def mark_retrieved(self, entry: Entry) -> None:
        if entry.retrieved is None:
            entry.retrieved = time.monotonic()

    def sweep(self) -> int:
        """Drop expired entries; returns how many."""
        now = time.monotonic()
        with self._lock:
            dead = [
                rid for rid, e in self._entries.items()
                if e.finished is not None and (
                    (e.retrieved is not None and now - e.retrieved > self.retrieved_grace_s)
                    or now - e.finished > self.result_ttl_s
                )
            ]
            for rid in dead:
                del self._entries[rid]
        return len(dead)

    async def wait(self, entry: Entry, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the entry to finish without blocking the event loop."""
        if entry.future.done():
            return True
        wrapped = asyncio.wrap_future(entry.future)
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())  # read here; reported by retrieve
        try:
            await asyncio.wait_for(asyncio.shield(wrapped), timeout)
        except asyncio.TimeoutError:
            return False
        except BaseException:  # noqa: BLE001 - the request failed: that is a finished result too
            pass
        return entry.future.done()
