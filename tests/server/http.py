"""Raw HTTP helpers for the server tests (what the SDK does, spelled out)."""

from __future__ import annotations

import time

import httpx


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=60)


def wait(c: httpx.Client, request_id: str, timeout: float = 60) -> dict:
    """Poll retrieve_future until the request is finished; returns the JSON body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.post("/retrieve_future", json={"request_id": request_id})
        r.raise_for_status()
        body = r.json()
        if body.get("type") != "try_again":
            return body
    raise TimeoutError(request_id)


def call(c: httpx.Client, route: str, body: dict) -> dict:
    """POST an asynchronous request and wait for its result."""
    r = c.post(route, json=body)
    assert r.status_code == 200, r.text
    return wait(c, r.json()["request_id"])


def datum(tokens: list[int]) -> dict:
    n = len(tokens) - 1
    return {
        "model_input": {"chunks": [{"tokens": tokens[:-1], "type": "encoded_text"}]},
        "loss_fn_inputs": {"target_tokens": {"data": tokens[1:], "dtype": "int64", "shape": [n]}},
    }


def new_model(c: httpx.Client, base_model: str, rank: int = 4) -> tuple[str, str]:
    """(session_id, model_id) of a fresh LoRA model."""
    session = c.post("/create_session", json={"tags": [], "user_metadata": None, "sdk_version": "test"}).json()["session_id"]
    out = call(c, "/create_model", {"session_id": session, "model_seq_id": 0, "base_model": base_model,
                                    "lora_config": {"rank": rank, "seed": 0}})
    return session, out["model_id"]
