"""A client session on the server: created once per ServiceClient, kept alive by a heartbeat thread.

Training and sampling clients (and their pending futures) hold the session, so it lives as long as any
of them; when the last one is garbage collected the heartbeat stops and the session is finished on the
server, which releases its adapters and sampler slots (checkpoints stay). A sampling client that is
closed or collected earlier closes its own sampler session (DELETE /samplers/{id}); collected ones are
closed by the heartbeat thread, never from inside the garbage collector.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import weakref
from typing import Any, Callable, TypeVar

from mint.client.remote.futures import RemoteFuture
from mint.client.remote.transport import Transport
from mint.errors import APIStatusError, MintError

T = TypeVar("T")

HEARTBEAT_SECONDS = 10.0  # the Tinker SDK's period


def _heartbeat(transport: Transport, session_id: str, stop: threading.Event, period: float,
               releases: "queue.SimpleQueue[str | None]") -> None:
    """Beat every ``period`` seconds until ``stop`` is set; in between, close the sampler sessions whose
    ids arrive in ``releases`` (put there by garbage-collected sampling clients; None wakes the thread)."""
    next_beat = time.monotonic() + period
    while not stop.is_set():
        try:
            sampler_id = releases.get(timeout=max(0.0, next_beat - time.monotonic()))
        except queue.Empty:
            sampler_id = None
        if stop.is_set():
            return
        if sampler_id is not None:
            _release_sampler(transport, sampler_id)
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + period
            try:
                transport.request("POST", "/session_heartbeat", json_body={"session_id": session_id}, timeout=10)
            except MintError:  # a missed beat is not fatal; the next one may get through
                continue


def _release_sampler(transport: Transport, sampler_id: str) -> None:
    """DELETE the sampler session on the server (best effort: an already released one is not an error)."""
    try:
        transport.request("DELETE", f"/samplers/{sampler_id}", timeout=10)
    except MintError:  # gone already (evicted, session finished) or unreachable: the server frees it anyway
        pass


def _finish(transport: Transport, session_id: str, stop: threading.Event,
            releases: "queue.SimpleQueue[str | None]") -> None:
    """Stop the heartbeat and tell the server the session is over, so it frees the session's adapters and
    sampler slots now rather than when the session times out. One quick attempt; errors are ignored."""
    stop.set()
    releases.put(None)  # wake the heartbeat thread so it exits now
    try:
        transport._client.post(transport.url(f"/sessions/{session_id}/finish"), timeout=2.0)
    except Exception:  # noqa: BLE001 - best effort: the server also ends sessions that stop beating
        pass


def _sdk_version() -> str:
    import mint

    return f"mint-{mint.__version__}"


class Session:
    """One ``create_session`` on the server with its transport, heartbeat and per-session counters."""

    def __init__(self, transport: Transport, user_metadata: dict[str, Any] | None = None,
                 heartbeat_seconds: float | None = None):
        heartbeat_seconds = HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
        self.transport = transport
        body = {"tags": [], "user_metadata": user_metadata, "sdk_version": _sdk_version(), "type": "create_session"}
        reply = transport.request("POST", "/create_session", json_body=body)
        if not isinstance(reply, dict) or not isinstance(reply.get("session_id"), str):
            raise APIStatusError(f"create_session: unexpected reply {reply!r}", status_code=200)
        self.session_id: str = reply["session_id"]
        self._model_seq = itertools.count()
        self._sampling_seq = itertools.count()
        self._stop = threading.Event()
        # Sampler ids to close on the server. SimpleQueue.put is safe in a weakref callback (it never
        # blocks and is reentrant), so sampling clients can hand their ids over when collected.
        self.sampler_releases: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        thread = threading.Thread(
            target=_heartbeat,
            args=(transport, self.session_id, self._stop, heartbeat_seconds, self.sampler_releases),
            name=f"mint-heartbeat-{self.session_id[:8]}", daemon=True,
        )
        thread.start()
        # When the last client of this session is gone, end it (not at interpreter exit: the server may be gone).
        self._finalizer = weakref.finalize(self, _finish, transport, self.session_id, self._stop,
                                           self.sampler_releases)
        self._finalizer.atexit = False

    def close(self) -> None:
        """End the session now: its training adapters and samplers are released on the server."""
        self._finalizer()

    def release_sampler_now(self, sampler_id: str) -> None:
        """Close a sampler session on the server now (blocking, errors ignored)."""
        _release_sampler(self.transport, sampler_id)

    def next_model_seq_id(self) -> int:
        return next(self._model_seq)

    def next_sampling_seq_id(self) -> int:
        return next(self._sampling_seq)

    def submit(self, path: str, body: Any, parse: Callable[[Any], T]) -> RemoteFuture[T]:
        """POST a request that the server answers with a future (``{"request_id": ...}``)."""
        reply = self.transport.request("POST", path, json_body=body)
        return self.future_of(reply, parse)

    def future_of(self, reply: Any, parse: Callable[[Any], T]) -> RemoteFuture[T]:
        if not isinstance(reply, dict) or not isinstance(reply.get("request_id"), str):
            raise APIStatusError(f"expected a request id, got {reply!r}", status_code=200)
        return RemoteFuture(self.transport, reply["request_id"], parse, keepalive=self)
