"""Typed errors raised by mint; their names follow the Tinker SDK so `except tinker.X` code ports."""

from __future__ import annotations


class MintError(Exception):
    """Base class of every error mint raises on purpose."""


class BadRequestError(MintError, ValueError):
    """The request is malformed; `field` names the offending input (e.g. ``data[3].target_tokens``)."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class NotFoundError(MintError, LookupError):
    """A model, run, checkpoint or path does not exist."""


class PermissionDeniedError(MintError, PermissionError):
    """The caller may not access the resource."""


class ConflictError(MintError):
    """The request conflicts with the current state (e.g. a name already in use)."""


class CheckpointCorruptedError(MintError):
    """A stored checkpoint failed verification (missing file, checksum mismatch or unreadable data)."""


class InternalServerError(MintError, RuntimeError):
    """mint failed while executing a valid request."""


class RateLimitError(MintError):
    """The server holds too many requests right now (HTTP 429); nothing was started, so retrying is safe.
    The remote clients retry it themselves with backoff before raising it."""


class APIStatusError(MintError):
    """An HTTP error returned by a remote mint server."""

    def __init__(self, message: str, *, status_code: int = 500):
        self.status_code = status_code
        super().__init__(message)


__all__ = [
    "APIStatusError",
    "BadRequestError",
    "CheckpointCorruptedError",
    "ConflictError",
    "InternalServerError",
    "MintError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
]
