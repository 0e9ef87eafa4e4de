"""Start ``mint serve`` worker processes and wait until they answer (used by ``python -m mint.cluster``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``workers`` loopback ``mint serve`` processes for ``base_models``, each with ``threads`` torch threads
    (default: the CPU count split between them). ``with Cluster(...) as c: c.urls``."""

    def __init__(self, workers: int, base_models: list[str], threads: int | None = None,
                 keys_file: str | None = None, env: dict[str, str] | None = None, startup_timeout: float = 300.0):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers, self.base_models, self.keys_file = workers, base_models, keys_file
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.env = env
        self.startup_timeout = startup_timeout
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []

    def start(self) -> "Cluster":
        root = str(Path(__file__).resolve().parents[2])
        base_env = dict(self.env if self.env is not None else os.environ)
        base_env["PYTHONPATH"] = os.pathsep.join(p for p in (root, base_env.get("PYTHONPATH")) if p)
        base_env["OMP_NUM_THREADS"] = str(self.threads)
        for _ in range(self.workers):
            port = _free_port()
            cmd = [sys.executable, "-m", "mint", "serve", "--host", "127.0.0.1", "--port", str(port)]
            for m in self.base_models:
                cmd += ["--base-model", m]
            if self.keys_file:
                cmd += ["--keys-file", self.keys_file]
            self.procs.append(subprocess.Popen(cmd, env=base_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            self.urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + self.startup_timeout
        for proc, url in zip(self.procs, self.urls):
            while True:
                try:
                    if httpx.get(url + "/api/v1/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None else ""
                    self.stop()
                    raise RuntimeError(f"worker {url} did not start: {err}")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
