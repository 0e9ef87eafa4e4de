"""API keys: each key is one user (the owner of the runs, sampler sessions and checkpoints it creates).

Keys come from ``MINT_API_KEYS`` (comma separated) and/or a keys file (one per line, ``#`` comments).
An entry is ``KEY`` or ``NAME:KEY``; without a name the owner is ``key-<first 12 hex of sha256(KEY)>``, so
the key itself is never stored as an owner or logged. The Tinker SDK only sends keys that start with
``tml-``. Keys are compared in constant time (``hmac.compare_digest``).

With no keys configured the server serves loopback clients only (``mint serve`` refuses a non-loopback
host, and every request from another address gets 401); any key is accepted and each distinct key is its
own user, which is convenient on a single machine and useless to an attacker who can't reach it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

from mint.errors import BadRequestError


def owner_of_key(key: str) -> str:
    """The owner name of an unnamed key: a short digest, never the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class KeyTable:
    """The configured keys as (digest of key, key bytes, owner) rows."""

    entries: list[tuple[bytes, str]] = field(default_factory=list, repr=False)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:  # never the keys (a logged or printed ServerConfig must not leak them)
        return f"KeyTable(owners={sorted({owner for _, owner in self.entries})})"

    def add(self, entry: str, source: str) -> None:
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            return
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = "", entry
        name, key = name.strip(), key.strip()
        if len(key) < 8:
            raise BadRequestError("an API key must have at least 8 characters", field=source)
        self.entries.append((key.encode(), name or owner_of_key(key)))

    def lookup(self, key: str | None) -> str | None:
        """The owner of ``key``, or None. Every configured key is compared (constant time each), so the
        time taken does not reveal which key matched or how much of it."""
        if key is None:
            return None
        given = key.encode()
        found = None
        for stored, owner in self.entries:
            if hmac.compare_digest(stored, given):
                found = owner
        return found


def load_keys(env_value: str | None, keys_file: str | Path | None) -> KeyTable:
    """Keys from a comma-separated string (``MINT_API_KEYS``) and a keys file (either may be None)."""
    table = KeyTable()
    if env_value:
        for part in env_value.split(","):
            table.add(part, "MINT_API_KEYS")
    if keys_file is not None:
        for line in Path(keys_file).read_text().splitlines():
            table.add(line, str(keys_file))
    return table


def key_from_headers(headers) -> str | None:
    """The API key of a request: ``X-API-Key`` (what the Tinker SDK sends) or ``Authorization: Bearer``."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None
