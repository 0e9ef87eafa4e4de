"""Test helper: a ``mint serve`` app (mint.server.create_app) run by uvicorn in a thread on a free port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

ALICE, BOB = "alice-test-key-1", "bob-test-key-22"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(base_models: list[str], keys: str = f"alice:{ALICE},bob:{BOB}"):
    """Yield the base URL of a server for ``base_models`` with the API keys ``keys`` (NAME:KEY, ...)."""
    import uvicorn

    from mint.server.app import create_app
    from mint.server.auth import load_keys
    from mint.server.config import ServerConfig

    app = create_app(ServerConfig(base_models=base_models, keys=load_keys(keys, None)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="mint-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.mint.close()
