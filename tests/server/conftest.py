"""Fixtures of the server tests: a module-scoped server with two users hosting the tiny Llama."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(tiny_llama):
    """A server with two users (alice, bob) hosting the tiny Llama."""
    from mint.server import ServerConfig
    from mint.server.auth import load_keys
    from tests.server.running import KEYS, RunningServer

    config = ServerConfig(base_models=[tiny_llama], keys=load_keys(KEYS, None), poll_wait_s=2.0)
    with RunningServer(config) as srv:
        yield srv
