"""APIFuture: the handle every client call returns (``.result()``, ``await``, ``result_async()``)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class APIFuture(Generic[T]):
    """The pending result of a mint call. ``result(timeout)`` blocks; ``await fut`` / ``result_async()`` don't.

    A call that failed re-raises its typed error (e.g. BadRequestError) from ``result()``.
    """

    def __init__(self, future: Future, transform: Callable[[Any], T] | None = None):
        self._future = future
        self._transform = transform

    def result(self, timeout: float | None = None) -> T:
        """Wait up to ``timeout`` seconds (None = forever) and return the result or raise the call's error."""
        value = self._future.result(timeout)
        return self._transform(value) if self._transform else value

    async def result_async(self, timeout: float | None = None) -> T:
        """Await the result without blocking the event loop."""
        value = await asyncio.wait_for(asyncio.wrap_future(self._future), timeout)
        return self._transform(value) if self._transform else value

    def __await__(self):
        return self.result_async().__await__()

    def done(self) -> bool:
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)


def completed(value: T) -> APIFuture[T]:
    """An APIFuture that already holds ``value``."""
    future: Future = Future()
    future.set_result(value)
    return APIFuture(future)


def failed(exc: BaseException) -> APIFuture:
    """An APIFuture that already holds the error ``exc``."""
    future: Future = Future()
    future.set_exception(exc)
    return APIFuture(future)
