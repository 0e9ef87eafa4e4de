"""Errors as HTTP responses: 4xx with a JSON body naming the field for anything the caller did wrong,
500 (with a generic message, details only in the server log) for mint's own failures.

Body: ``{"detail": "<field>: <message>", "field": "<field or null>", "type": "<error class>"}``.
Another user's resource is reported exactly like a missing one (404), so existence does not leak.
4xx responses carry ``x-should-retry: false`` so HTTP clients don't retry them.
"""

from __future__ import annotations

import logging

import pydantic
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mint.errors import (
    BadRequestError,
    CheckpointCorruptedError,
    ConflictError,
    MintError,
    NotFoundError,
    PermissionDeniedError,
)
from mint.server.futures import RegistryFullError

log = logging.getLogger("mint.server")


def _loc(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def describe(exc: BaseException) -> tuple[int, str, str | None]:
    """(HTTP status, message, field) for an error raised while handling a request."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [p for p in first.get("loc", ()) if p != "body"]
        field = _loc(loc) or "body"
        return 400, f"{field}: {first.get('msg', 'invalid')}", field
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        field = _loc(first.get("loc", ())) or None
        return 400, f"{field}: {first.get('msg')}" if field else str(first.get("msg")), field
    if isinstance(exc, BadRequestError):
        return 400, str(exc), exc.field
    if isinstance(exc, PermissionDeniedError):
        return 404, "not found", None
    if isinstance(exc, NotFoundError):
        return 404, str(exc), None
    if isinstance(exc, ConflictError):
        return 409, str(exc), None
    if isinstance(exc, CheckpointCorruptedError):
        return 422, str(exc), None
    if isinstance(exc, RegistryFullError):
        return 429, str(exc), None
    if isinstance(exc, (MintError, ValueError)) and not isinstance(exc, RuntimeError):
        return 400, str(exc), None
    return 500, "internal server error", None


def public_type(exc: BaseException, status: int) -> str:
    """The error class name a response shows: a mint error's own name, except that another user's
    resource is reported as ``NotFoundError`` (like a missing one); validation errors are
    ``BadRequestError``; anything else (mint's own failures) is ``InternalServerError``, so neither
    existence nor implementation details leak through the name."""
    if isinstance(exc, PermissionDeniedError) or status == 404:
        return "NotFoundError"
    if isinstance(exc, RegistryFullError):
        return "RateLimitError"
    if status >= 500:
        return "InternalServerError"
    if isinstance(exc, MintError) and type(exc).__module__ == "mint.errors":
        return type(exc).__name__
    return "BadRequestError" if status == 400 else "MintError"


def error_response(exc: BaseException) -> JSONResponse:
    status, message, field = describe(exc)
    if status >= 500:
        log.error("internal error: %s", exc, exc_info=exc)
    headers = {"x-should-retry": "false"} if status < 500 and status != 429 else None
    return JSONResponse(
        {"detail": message, "field": field, "type": public_type(exc, status)}, status_code=status, headers=headers
    )


def failed_result(exc: BaseException) -> dict:
    """A failed request as the body of ``retrieve_future`` (``RequestFailedResponse``)."""
    status, message, field = describe(exc)
    if status >= 500:
        log.error("request failed: %s", exc, exc_info=exc)
    # field / status_code (ignored by the Tinker SDK) let mint's remote client raise the in-process error type.
    return {"error": message, "category": "server" if status >= 500 else "user", "field": field, "status_code": status}


def install(app) -> None:
    """Register the handlers on a FastAPI app."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(pydantic.ValidationError, handle)
    app.add_exception_handler(MintError, handle)
    app.add_exception_handler(RegistryFullError, handle)
    app.add_exception_handler(Exception, handle)
