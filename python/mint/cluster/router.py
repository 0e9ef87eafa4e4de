"""An adapter-affinity router in front of several ``mint serve`` workers (docs/SCALING.md, step 1).

Each worker is a full ``mint serve`` process with its own engine (its own copy of the base model, its
own adapter pool); all workers share the data directory (SQLite store and checkpoint files) and the API
keys. The router speaks the same Tinker REST protocol and forwards each request to one worker:

- ``create_session`` goes to the worker with the fewest sessions; the session's id is pinned to it;
- ``samplers/{id}`` (GET, DELETE) goes to the worker that opened that sampler session;
- requests naming a ``session_id`` (create_model, create_sampling_session, heartbeats, finish) go to the
  session's worker, so a user's adapters and samplers live together;
- ``model_id``, ``sampling_session_id`` and ``request_id`` are pinned to the worker that issued them
  (learned from its replies, including ``retrieve_future`` results), and requests naming them follow;
- everything else (runs, checkpoints, capabilities) goes to worker 0: the store is shared.

The protobuf ``forward_backward`` of the Tinker SDK is routed by the ``model_id`` inside it. Ids the
router has not seen go to worker 0, which answers 404 as a single server would.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

PROTO = "application/x-protobuf"
_FORWARDED_REQUEST_HEADERS = ("x-api-key", "authorization", "content-type", "content-encoding", "accept")
_FORWARDED_RESPONSE_HEADERS = ("content-type", "x-should-retry")
_ID_KEYS = ("request_id", "sampling_session_id", "model_id", "session_id")


class _Pins:
    """id -> worker index for one kind of id, bounded (least recently used ids are forgotten first)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._map: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> int | None:
        with self._lock:
            worker = self._map.get(key)
            if worker is not None:
                self._map.move_to_end(key)
            return worker

    def put(self, key: str, worker: int) -> None:
        with self._lock:
            self._map[key] = worker
            self._map.move_to_end(key)
            while len(self._map) > self.capacity:
                self._map.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._map.pop(key, None)

    def values(self) -> list[int]:
        with self._lock:
            return list(self._map.values())


class Router:
    """The routing state: which worker holds which session, model, sampler and request."""

    def __init__(self, workers: list[str], capacity: int = 1_000_000):
        if not workers:
            raise ValueError("a router needs at least one worker")
        self.workers = [w.rstrip("/") for w in workers]
        self.pins = {k: _Pins(capacity) for k in _ID_KEYS}

    def sessions_per_worker(self) -> list[int]:
        counts = [0] * len(self.workers)
        for w in self.pins["session_id"].values():
            counts[w] += 1
        return counts

    def choose(self, path: str, ids: dict[str, str]) -> int:
        """The worker for a request to ``path`` naming ``ids`` (request_id, sampling_session_id, model_id,
        session_id, in that order of precedence)."""
        if path.endswith("/create_session"):
            counts = self.sessions_per_worker()
            return counts.index(min(counts))
        for key in _ID_KEYS:
            if key in ids:
                worker = self.pins[key].get(ids[key])
                if worker is not None:
                    return worker
        return 0

    def learn(self, worker: int, body: Any) -> None:
        """Pin every id a worker's JSON reply names to that worker."""
        if isinstance(body, dict):
            for key in _ID_KEYS:
                value = body.get(key)
                if isinstance(value, str) and value:
                    self.pins[key].put(value, worker)


def _ids_of(path: str, content_type: str, raw: bytes) -> dict[str, str]:
    ids: dict[str, str] = {}
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[-3] == "sessions" and parts[-1] == "finish":
        ids["session_id"] = parts[-2]
    if len(parts) == 4 and parts[:3] == ["api", "v1", "samplers"]:  # GET / DELETE /api/v1/samplers/{id}
        ids["sampling_session_id"] = parts[-1]
    if PROTO in content_type and path.endswith("/forward_backward"):
        try:
            from mint.server.codec import decode_forward_backward

            ids["model_id"] = decode_forward_backward(raw)["model_id"]
        except Exception:  # noqa: BLE001 - an unreadable body goes to worker 0, which reports it
            pass
        return ids
    if raw and ("json" in content_type or raw[:1] == b"{"):
        try:
            body = json.loads(raw)
        except ValueError:
            return ids
        if isinstance(body, dict):
            for key in _ID_KEYS:
                if isinstance(body.get(key), str):
                    ids[key] = body[key]
    return ids


def create_router_app(workers: list[str], timeout: float = 120.0) -> FastAPI:
    """A FastAPI app forwarding the Tinker REST protocol to ``workers`` (base URLs of ``mint serve``).
    ``app.state.router`` is the :class:`Router`."""
    router = Router(workers)
    clients: dict[int, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for c in clients.values():
            await c.aclose()

    app = FastAPI(title="mint router", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.router = router

    def client_for(worker: int) -> httpx.AsyncClient:
        if worker not in clients:
            clients[worker] = httpx.AsyncClient(base_url=router.workers[worker], timeout=timeout)
        return clients[worker]

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def forward(path: str, request: Request) -> Response:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        worker = router.choose("/" + path, _ids_of("/" + path, content_type, raw))
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS}
        try:
            reply = await client_for(worker).request(
                request.method, "/" + path, content=raw, params=request.query_params, headers=headers
            )
        except httpx.TransportError as exc:
            body = {"detail": f"worker {worker} unavailable: {type(exc).__name__}", "field": None, "type": "InternalServerError"}
            return Response(json.dumps(body), status_code=503, media_type="application/json")
        if "json" in reply.headers.get("content-type", "") and reply.status_code < 400:
            try:
                router.learn(worker, reply.json())
            except ValueError:
                pass
        if path.endswith("/finish") and reply.status_code < 400:
            ids = _ids_of("/" + path, content_type, raw)
            if "session_id" in ids:
                router.pins["session_id"].pop(ids["session_id"])
        if request.method == "DELETE" and reply.status_code < 400:
            ids = _ids_of("/" + path, content_type, raw)
            if "sampling_session_id" in ids:
                router.pins["sampling_session_id"].pop(ids["sampling_session_id"])
        out_headers = {k: v for k, v in reply.headers.items() if k.lower() in _FORWARDED_RESPONSE_HEADERS}
        return Response(reply.content, status_code=reply.status_code, headers=out_headers)

    return app
