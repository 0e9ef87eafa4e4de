"""The remote transport retries what never started: refused connections and 429 (the server's request
registry is full); every other error is raised at once, as its typed mint error."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import mint
from mint.client.remote import transport as transport_module
from mint.client.remote.transport import Transport


def with_responses(monkeypatch, statuses: list[int]) -> tuple[Transport, list[int]]:
    """A Transport whose server answers ``statuses`` in turn (then 200), counting the calls."""
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        status = statuses[len(calls) - 1] if len(calls) <= len(statuses) else 200
        if status == 429:
            return httpx.Response(429, json={"detail": "4096 requests are pending or unretrieved; retry later",
                                             "error_type": "RateLimitError"})
        if status == 500:
            return httpx.Response(500, json={"detail": "internal server error", "error_type": "InternalServerError"})
        return httpx.Response(200, json={"ok": True})

    monkeypatch.setattr(transport_module.time, "sleep", lambda s: None)
    t = Transport("http://mint.test", "key")
    t._client = httpx.Client(base_url=t.base_url, transport=httpx.MockTransport(handler))
    return t, calls


def test_429_is_retried_then_succeeds(monkeypatch):
    t, calls = with_responses(monkeypatch, [429, 429, 429])
    assert t.request("POST", "/forward_backward", json_body={}) == {"ok": True}
    assert len(calls) == 4


def test_429_past_the_retries_raises_rate_limit_error(monkeypatch):
    t, calls = with_responses(monkeypatch, [429] * 50)
    with pytest.raises(mint.RateLimitError, match="retry later"):
        t.request("POST", "/forward_backward", json_body={})
    assert len(calls) == transport_module.RATE_LIMIT_RETRIES + 1


def test_other_errors_are_not_retried(monkeypatch):
    t, calls = with_responses(monkeypatch, [500])
    with pytest.raises(mint.InternalServerError):
        t.request("POST", "/forward_backward", json_body={})
    assert len(calls) == 1


def test_async_429_is_retried(monkeypatch):
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(429, json={"detail": "full", "error_type": "RateLimitError"})
        return httpx.Response(200, json={"ok": 1})

    async def no_sleep(_):
        return None

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    t = Transport("http://mint.test", "key")

    async def run():
        async with httpx.AsyncClient(base_url=t.base_url, transport=httpx.MockTransport(handler)) as client:
            return await t.arequest(client, "POST", "/asample", json_body={})

    assert asyncio.run(run()) == {"ok": 1} and len(calls) == 3
