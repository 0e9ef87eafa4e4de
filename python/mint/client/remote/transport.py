"""HTTP transport to a ``mint serve`` (or any Tinker-protocol) server: one pooled httpx client per
ServiceClient, the API key header, JSON bodies, bounded retries of requests that never reached the
server, and server errors turned into the typed errors of :mod:`mint.errors`.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import httpx

from mint.errors import (
    APIStatusError,
    BadRequestError,
    CheckpointCorruptedError,
    ConflictError,
    InternalServerError,
    MintError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
CONNECT_RETRIES = 5
RATE_LIMIT_RETRIES = 8  # 429s retried with backoff 0.1, 0.2, ... 2 s: about 10 s in all before raising


def _backoff_s(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): 0.1 s doubling, at most 2 s."""
    return min(0.1 * 2**attempt, 2.0)

# Error class names a server may put in its error bodies ("error_type" / "type"), mapped to mint's classes.
_ERRORS_BY_NAME: dict[str, type[MintError]] = {
    cls.__name__: cls
    for cls in (
        BadRequestError,
        NotFoundError,
        PermissionDeniedError,
        ConflictError,
        CheckpointCorruptedError,
        InternalServerError,
        RateLimitError,
    )
}
_ERRORS_BY_STATUS: dict[int, type[MintError]] = {
    400: BadRequestError,
    401: PermissionDeniedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}


def _field_from_loc(loc: Any) -> str | None:
    """``"body.data.0.model_input"`` style locations of FastAPI validation errors as ``data[0].model_input``."""
    if not isinstance(loc, (list, tuple)):
        return None
    parts = [p for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _message_and_field(body: Any) -> tuple[str, str | None]:
    """The human message and the offending field named by an error body of any of the usual shapes."""
    if isinstance(body, str):
        return body, None
    if not isinstance(body, dict):
        return json.dumps(body), None
    field = body.get("field") if isinstance(body.get("field"), str) else None
    detail = body.get("detail", body.get("error", body.get("message")))
    if isinstance(detail, dict):  # {"detail": {"message": ..., "field": ...}}
        inner_msg, inner_field = _message_and_field(detail)
        return inner_msg, field or inner_field
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI 422
        first = detail[0]
        field = field or _field_from_loc(first.get("loc"))
        return str(first.get("msg", detail)), field
    message = str(detail) if detail is not None else json.dumps(body)
    if field and message.startswith(f"{field}: "):  # the server already prefixed it (BadRequestError's str)
        message = message[len(field) + 2 :]
    return message, field


def error_from_body(status_code: int | None, body: Any) -> MintError:
    """The mint error for an error body (an HTTP error response or a failed future's result).

    The class comes from the body's ``error_type`` / ``type`` when it names a mint error, else from the
    HTTP status, else from a failed future's ``category`` ("user" -> BadRequestError). BadRequestError
    keeps the ``field`` the server named.
    """
    message, field = _message_and_field(body)
    cls: type[MintError] | None = None
    if isinstance(body, dict):
        for key in ("error_type", "type", "code"):
            name = body.get(key)
            if isinstance(name, str) and name in _ERRORS_BY_NAME:
                cls = _ERRORS_BY_NAME[name]
                break
    if cls is None and status_code is not None:
        cls = _ERRORS_BY_STATUS.get(status_code)
        if cls is None and status_code >= 500:
            cls = InternalServerError
    if cls is None and isinstance(body, dict):
        category = str(body.get("category", "")).lower()
        cls = BadRequestError if category == "user" else InternalServerError
    if cls is None:
        return APIStatusError(message, status_code=status_code or 0)
    err = BadRequestError(message, field=field) if cls is BadRequestError else cls(message)
    err.status_code = status_code  # the HTTP status (None for a failed future's result)
    return err


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text or response.reason_phrase


def mint_paths(value: Any) -> Any:
    """``value`` with every ``tinker://`` checkpoint path written ``mint://`` (what the in-process clients
    return; both spellings are accepted as input). Lists of numbers are skipped without a walk."""
    if isinstance(value, str):
        return "mint://" + value[len("tinker://"):] if value.startswith("tinker://") else value
    if isinstance(value, dict):
        return {k: mint_paths(v) for k, v in value.items()}
    if isinstance(value, list) and value and not isinstance(value[0], (int, float)):
        return [mint_paths(v) for v in value]
    return value


def check_response(response: httpx.Response) -> Any:
    """The JSON body of a successful response; a typed mint error for a 4xx / 5xx one."""
    if response.status_code >= 400:
        raise error_from_body(response.status_code, _body_of(response))
    if not response.content:
        return None
    try:
        return mint_paths(response.json())
    except ValueError as exc:
        raise APIStatusError(f"server sent a non-JSON reply: {response.text[:200]!r}",
                             status_code=response.status_code) from exc


def encode(value: Any) -> Any:
    """A JSON-ready value: pydantic models dumped in JSON mode (None fields dropped), containers recursed."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


class Transport:
    """Sync and async HTTP calls to ``base_url`` with the API key in the ``X-API-Key`` header (as the
    Tinker SDK sends it). One pooled sync client, thread-safe; async calls open a short-lived client on
    the running event loop. Only requests that failed to connect, or that the server refused with 429
    before starting any work, are retried (with backoff), so retrying cannot run anything twice."""

    def __init__(self, base_url: str, api_key: str | None, timeout: httpx.Timeout = DEFAULT_TIMEOUT):
        if not base_url.startswith(("http://", "https://")):
            raise BadRequestError(f"{base_url!r} must start with http:// or https://", field="base_url")
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout
        self._ssl = ssl.create_default_context()  # built once: httpx would build (and load CAs) per client
        self._client = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, verify=self._ssl,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        return path if path.startswith("/api/") else API_PREFIX + path

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                timeout: float | None = None) -> Any:
        """Send one request and return its JSON body (None for an empty one); raise the typed error."""
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = encode(json_body)
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if timeout is not None:
            kwargs["timeout"] = timeout
        limited = 0
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                while True:
                    try:
                        return check_response(self._client.request(method, self.url(path), **kwargs))
                    except RateLimitError:
                        if limited == RATE_LIMIT_RETRIES:
                            raise
                        time.sleep(_backoff_s(limited))
                        limited += 1
            except httpx.ConnectError as exc:
                if attempt == CONNECT_RETRIES:
                    raise APIStatusError(f"cannot reach {self.base_url}: {exc}", status_code=0) from exc
                time.sleep(_backoff_s(attempt))
            except httpx.TimeoutException as exc:
                raise APIStatusError(f"{method} {path} timed out: {exc}", status_code=0) from exc
            except httpx.TransportError as exc:
                raise APIStatusError(f"{method} {path} failed: {exc}", status_code=0) from exc
        raise AssertionError("unreachable")

    def async_client(self) -> httpx.AsyncClient:
        """A new async client with this transport's settings (use as ``async with``)."""
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=self.timeout, verify=self._ssl)

    async def arequest(self, client: httpx.AsyncClient, method: str, path: str, *, json_body: Any = None,
                       params: dict | None = None, timeout: float | None = None) -> Any:
        """Async twin of :meth:`request` over ``client`` (from :meth:`async_client`)."""
        import asyncio

        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = encode(json_body)
        if params:
            kwargs["params"] = {k: v for k, v in params.items() if v is not None}
        if timeout is not None:
            kwargs["timeout"] = timeout
        limited = 0
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                while True:
                    try:
                        return check_response(await client.request(method, self.url(path), **kwargs))
                    except RateLimitError:
                        if limited == RATE_LIMIT_RETRIES:
                            raise
                        await asyncio.sleep(_backoff_s(limited))
                        limited += 1
            except httpx.ConnectError as exc:
                if attempt == CONNECT_RETRIES:
                    raise APIStatusError(f"cannot reach {self.base_url}: {exc}", status_code=0) from exc
                await asyncio.sleep(_backoff_s(attempt))
            except httpx.TimeoutException as exc:
                raise APIStatusError(f"{method} {path} timed out: {exc}", status_code=0) from exc
            except httpx.TransportError as exc:
                raise APIStatusError(f"{method} {path} failed: {exc}", status_code=0) from exc
        raise AssertionError("unreachable")
