"""Settings of one ``mint serve`` process (API keys, allowed base models, limits)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from mint.server.auth import KeyTable, load_keys


@dataclass
class ServerConfig:
    """What a server hosts and how it guards itself.

    - ``base_models``: names or local folders clients may train and sample (the first is the default);
      nothing else is ever loaded, so a client cannot make the server read arbitrary paths.
    - ``keys``: API key -> owner. Empty means "no keys configured": only loopback clients are served and
      every distinct key presented is its own user (see :mod:`mint.server.auth`).
    - ``max_body_bytes``: larger request bodies (after decompression) get 413.
    - ``result_ttl_s`` / ``max_pending``: finished results are kept until retrieved, then ``retrieved_grace_s``
      more seconds (a client that lost the reply can ask again), and dropped after ``result_ttl_s`` even if
      never retrieved; at most ``max_pending`` requests are held at once (429 beyond).
    - ``session_ttl_s``: a session without heartbeat or request for this long is finished (its training
      models and sampler sessions are released; checkpoints stay). ``max_models_per_user`` bounds the
      training models one user holds open (400 beyond); at ``max_samplers_per_user`` open sampler sessions,
      opening another closes that user's least recently used one (its pool slot is freed).
    - ``poll_wait_s``: how long ``retrieve_future`` waits for an unfinished request before answering
      "try again" (long polling keeps clients from spinning).
    """

    base_models: list[str] = field(default_factory=list)
    keys: KeyTable = field(default_factory=KeyTable)
    max_body_bytes: int = 64 * 1024 * 1024
    result_ttl_s: float = 900.0
    retrieved_grace_s: float = 60.0
    max_pending: int = 4096
    poll_wait_s: float = 10.0
    session_ttl_s: float = 3600.0
    max_models_per_user: int = 32
    max_samplers_per_user: int = 256

    @classmethod
    def from_env(cls, base_models: list[str] | None = None, keys_file: str | Path | None = None, **kw) -> "ServerConfig":
        """A config with keys from ``MINT_API_KEYS`` (comma separated) and/or ``keys_file``."""
        keys = load_keys(os.environ.get("MINT_API_KEYS"), keys_file)
        return cls(base_models=list(base_models or []), keys=keys, **kw)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
