"""RemoteFuture: an APIFuture whose value is a server-side request, fetched with ``retrieve_future``.

The server answers a poll with the result, ``{"type": "try_again"}`` while the request is queued or
running, or ``{"error": ..., "category": ...}`` when it failed. ``result()`` polls from the calling
thread; ``await`` polls from the event loop with an async client. The first answer is kept, so the value
is fetched from the server once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Generic, TypeVar

from mint.client.futures import APIFuture
from mint.client.remote.transport import Transport, error_from_body
from mint.errors import APIStatusError, MintError

T = TypeVar("T")

_PENDING = object()
# Poll back-off while the server says "try again" at once; a server that holds the poll open (long
# polling) answers slowly and is polled again without sleeping.
_FIRST_DELAY, _MAX_DELAY, _LONG_POLL = 0.002, 0.1, 0.5
_TRANSIENT_RETRIES = 5  # gateway errors / dropped connections while polling
_TRANSIENT = (0, 502, 503, 504)
_DONE_WAIT = 0.25


class RemoteFuture(APIFuture[T], Generic[T]):
    """The pending result of a request the server accepted under ``request_id``.

    ``result(timeout)`` blocks the calling thread (raising TimeoutError after ``timeout`` seconds);
    ``await fut`` / ``result_async()`` don't block the event loop. A failed request raises the same
    typed error (BadRequestError naming the field, NotFoundError, ...) as the in-process client.
    """

    def __init__(self, transport: Transport, request_id: str, parse: Callable[[Any], T], keepalive: Any = None):
        self._transport = transport
        self._keepalive = keepalive  # the session, so that it outlives a pending request
        self.request_id = request_id
        self._parse = parse
        self._value: Any = _PENDING
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    # ---- one poll ----
    def _settle(self, body: Any) -> bool:
        """Record a poll answer; True once the request has finished (either way)."""
        if isinstance(body, dict) and body.get("type") == "try_again":
            return False
        if isinstance(body, dict) and isinstance(body.get("error"), str):  # RequestFailedResponse
            status = body.get("status_code")
            self._error = error_from_body(status if isinstance(status, int) else None, body)
            return True
        try:
            self._value = self._parse(body)
        except Exception as exc:  # a reply that does not match the expected type
            self._error = APIStatusError(f"unexpected reply to request {self.request_id}: {exc}", status_code=200)
        return True

    def _finished(self) -> bool:
        return self._value is not _PENDING or self._error is not None

    def _outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value

    def _poll_body(self) -> dict:
        return {"request_id": self.request_id, "allow_metadata_only": False}

    def _poll_once(self, timeout: float | None = None) -> tuple[bool, float]:
        """One retrieve_future call (the server may hold it open until the request finishes, up to its
        poll wait, or ``timeout``): (finished, seconds it took)."""
        start = time.monotonic()
        for attempt in range(_TRANSIENT_RETRIES + 1):
            try:
                body = self._transport.request("POST", "/retrieve_future", json_body=self._poll_body(), timeout=timeout)
                break
            except MintError as exc:
                status = getattr(exc, "status_code", None)
                if status == 408:  # Tinker servers' "still running" as an HTTP status
                    return False, time.monotonic() - start
                if attempt == _TRANSIENT_RETRIES or status not in _TRANSIENT or timeout is not None:
                    raise
                time.sleep(0.05 * 2**attempt)
        return self._settle(body), time.monotonic() - start

    # ---- APIFuture interface ----
    def result(self, timeout: float | None = None) -> T:
        """Wait up to ``timeout`` seconds (None = forever) for the result; raise the request's error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _FIRST_DELAY
        with self._lock:
            while not self._finished():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"request {self.request_id} not finished after {timeout} s")
                try:
                    finished, took = self._poll_once(None if remaining is None else max(remaining, 0.05))
                except MintError as exc:
                    if deadline is not None and getattr(exc, "status_code", None) == 0 \
                            and time.monotonic() >= deadline - 0.01:
                        raise TimeoutError(f"request {self.request_id} not finished after {timeout} s") from exc
                    self._error = exc
                    break
                if finished:
                    break
                if took < _LONG_POLL:
                    pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
                    time.sleep(pause)
                    delay = min(delay * 1.5, _MAX_DELAY)
                else:
                    delay = _FIRST_DELAY
        return self._outcome()

    async def result_async(self, timeout: float | None = None) -> T:
        """Await the result without blocking the event loop (TimeoutError after ``timeout`` seconds)."""
        if self._finished():
            return self._outcome()
        return await asyncio.wait_for(self._poll_async(), timeout)

    async def _poll_async(self) -> T:
        delay = _FIRST_DELAY
        async with self._transport.async_client() as client:
            while not self._finished():
                start = time.monotonic()
                body: Any = None
                for attempt in range(_TRANSIENT_RETRIES + 1):
                    try:
                        body = await self._transport.arequest(client, "POST", "/retrieve_future",
                                                              json_body=self._poll_body())
                        break
                    except MintError as exc:
                        status = getattr(exc, "status_code", None)
                        if status == 408:
                            body = {"type": "try_again"}
                            break
                        if attempt == _TRANSIENT_RETRIES or status not in _TRANSIENT:
                            if not self._finished():
                                self._error = exc
                            return self._outcome()
                        await asyncio.sleep(0.05 * 2**attempt)
                if self._finished() or self._settle(body):
                    break
                if time.monotonic() - start < _LONG_POLL:
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, _MAX_DELAY)
                else:
                    delay = _FIRST_DELAY
        return self._outcome()

    def done(self) -> bool:
        """Whether the request has finished (asks the server, for at most a quarter second, if not known yet)."""
        if not self._finished() and self._lock.acquire(blocking=False):
            try:
                self._poll_once(timeout=_DONE_WAIT)
            except MintError as exc:
                if getattr(exc, "status_code", None) not in _TRANSIENT:  # not just our short timeout
                    self._error = exc
            finally:
                self._lock.release()
        return self._finished()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The request's error (None if it succeeded), waiting up to ``timeout`` seconds."""
        try:
            self.result(timeout)
        except TimeoutError:
            raise
        except BaseException as exc:  # noqa: BLE001 - returned, as concurrent.futures does
            return exc
        return None
