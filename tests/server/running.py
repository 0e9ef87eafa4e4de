"""A real uvicorn server on a free loopback port, in a background thread (see tests/server/conftest.py)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """``with RunningServer(config) as srv: srv.url``: uvicorn serving ``create_app(config)``."""

    def __init__(self, config):
        from mint.server import create_app

        self.app = create_app(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.app.state.mint.close()


KEYS = "alice:tml-alice-key-0001,bob:tml-bob-key-00002"
ALICE, BOB = "tml-alice-key-0001", "tml-bob-key-00002"


