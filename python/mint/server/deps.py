"""Request dependencies: the caller's identity and the server state."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from mint.server.auth import key_from_headers, owner_of_key
from mint.server.config import is_loopback
from mint.server.state import ServerState


class Unauthorized(Exception):
    """No valid API key (HTTP 401)."""


def state(request: Request) -> ServerState:
    return request.app.state.mint


def user(request: Request) -> str:
    """The owner of the request's API key. With keys configured the key must be one of them; without,
    only loopback clients are served and each distinct key is its own user ("local" without a key)."""
    st: ServerState = request.app.state.mint
    key = key_from_headers(request.headers)
    if st.config.keys:
        owner = st.config.keys.lookup(key)
        if owner is None:
            raise Unauthorized("missing or unknown API key (send it as X-API-Key)")
        return owner
    host = request.client.host if request.client else None
    if not is_loopback(host):
        raise Unauthorized("this server has no API keys configured and serves loopback clients only")
    return owner_of_key(key) if key else "local"


def unauthorized_response(exc: Unauthorized) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": "X-API-Key", "type": "AuthenticationError"}, status_code=401,
                        headers={"x-should-retry": "false"})
