"""Checkpoint and training-run metadata in SQLite (stdlib sqlite3, WAL journal), one file per data directory.

Tables: ``runs`` (id, base_model, owner, lora_rank, created_at, last_request_time, corrupted, user_metadata)
and ``checkpoints`` (run_id, kind, name, file, sha256, size, created_at, expires_at, public). Times are unix
seconds (float). A checkpoint row is written only after its file is durably on disk, in one transaction, so
a row always names a complete file; the row is the commit point of a save.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mint.errors import NotFoundError

DB_FILE = "mint.db"
KINDS = ("weights", "sampler_weights")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    base_model TEXT NOT NULL,
    owner TEXT NOT NULL,
    lora_rank INTEGER,
    created_at REAL NOT NULL,
    last_request_time REAL,
    corrupted INTEGER NOT NULL DEFAULT 0,
    user_metadata TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL CHECK (kind IN ('weights', 'sampler_weights')),
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    public INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, kind, name)
);
CREATE INDEX IF NOT EXISTS runs_by_owner ON runs(owner, created_at);
"""


_acting_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("mint_acting_user", default=None)


@contextlib.contextmanager
def acting_user(user: str) -> Iterator[None]:
    """Within this block (this thread / task only), :func:`current_user` is ``user``. The server uses it
    to run storage and engine calls on behalf of the API key's owner."""
    token = _acting_user.set(user)
    try:
        yield
    finally:
        _acting_user.reset(token)


def current_user() -> str:
    """The owner recorded for new runs: the user of an enclosing :func:`acting_user` block, else
    ``$MINT_USER``, else the OS user name."""
    acting = _acting_user.get()
    if acting is not None:
        return acting
    user = os.environ.get("MINT_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry (containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "user"


@dataclass(frozen=True)
class RunRow:
    id: str
    base_model: str
    owner: str
    lora_rank: int | None
    created_at: float
    last_request_time: float | None
    corrupted: bool
    user_metadata: dict[str, str] | None


@dataclass(frozen=True)
class CheckpointRow:
    run_id: str
    kind: str
    name: str
    file: str
    sha256: str
    size: int
    created_at: float
    expires_at: float | None
    public: bool

    @property
    def path(self) -> str:
        return f"mint://{self.run_id}/{self.kind}/{self.name}"


def _run(row: sqlite3.Row) -> RunRow:
    meta = json.loads(row["user_metadata"]) if row["user_metadata"] else None
    return RunRow(
        id=row["id"], base_model=row["base_model"], owner=row["owner"], lora_rank=row["lora_rank"],
        created_at=row["created_at"], last_request_time=row["last_request_time"],
        corrupted=bool(row["corrupted"]), user_metadata=meta,
    )


def _ckpt(row: sqlite3.Row) -> CheckpointRow:
    return CheckpointRow(
        run_id=row["run_id"], kind=row["kind"], name=row["name"], file=row["file"], sha256=row["sha256"],
        size=row["size"], created_at=row["created_at"], expires_at=row["expires_at"], public=bool(row["public"]),
    )


_init_lock = threading.Lock()
_initialised: set[str] = set()


class Store:
    """The metadata database of one data directory. Cheap to create; every call opens its own connection,
    so a Store may be shared by threads and processes (SQLite locking, 30 s busy timeout)."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.db_path = self.home / DB_FILE
        key = str(self.db_path)
        with _init_lock:
            if key not in _initialised:
                self.home.mkdir(parents=True, exist_ok=True)
                with self._connect() as db:
                    db.executescript(_SCHEMA)
                _initialised.add(key)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT; rolled back on error)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- runs ----
    def create_run(
        self, run_id: str, base_model: str, owner: str, lora_rank: int | None,
        user_metadata: dict[str, str] | None = None,
    ) -> None:
        """Record a new training run (no-op if the id already exists)."""
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (id, base_model, owner, lora_rank, created_at, last_request_time, "
                "user_metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, base_model, owner, lora_rank, now, now, json.dumps(user_metadata) if user_metadata else None),
            )

    def get_run(self, run_id: str) -> RunRow:
        """The run ``run_id``; NotFoundError if unknown."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no training run {run_id!r}")
        return _run(row)

    def list_runs(self, owner: str, limit: int, offset: int, include_public: bool = False) -> tuple[list[RunRow], int]:
        """Runs of ``owner`` (plus runs with a public checkpoint if ``include_public``), newest first:
        (one page, total count)."""
        where = "owner = ?"
        if include_public:
            where += " OR id IN (SELECT run_id FROM checkpoints WHERE public = 1)"
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", (owner,)).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM runs WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                (owner, limit, offset),
            ).fetchall()
        return [_run(r) for r in rows], total

    def touch_run(self, run_id: str) -> None:
        """Set the run's last_request_time to now."""
        with self._write() as db:
            db.execute("UPDATE runs SET last_request_time = ? WHERE id = ?", (time.time(), run_id))

    def mark_corrupted(self, run_id: str) -> None:
        """Flag a run whose checkpoint failed verification."""
        with self._write() as db:
            db.execute("UPDATE runs SET corrupted = 1 WHERE id = ?", (run_id,))

    # ---- checkpoints ----
    def put_checkpoint(
        self, run_id: str, kind: str, name: str, file: str, sha256: str, size: int,
        expires_at: float | None, base_model: str, owner: str,
    ) -> str | None:
        """Insert or replace a checkpoint row (creating its run row if missing) in one transaction.

        Returns the file name of the checkpoint it replaced (for the caller to delete), else None.
        """
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (id, base_model, owner, lora_rank, created_at) VALUES (?, ?, ?, NULL, ?)",
                (run_id, base_model, owner, time.time()),
            )
            old = db.execute(
                "SELECT file FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?", (run_id, kind, name)
            ).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, kind, name, file, sha256, size, created_at, expires_at, "
                "public) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (run_id, kind, name, file, sha256, size, time.time(), expires_at),
            )
        return old["file"] if old is not None and old["file"] != file else None

    def get_checkpoint(self, run_id: str, kind: str, name: str) -> CheckpointRow:
        """The checkpoint row; NotFoundError if there is none or it has expired."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?", (run_id, kind, name)
            ).fetchone()
        if row is None or (row["expires_at"] is not None and row["expires_at"] <= time.time()):
            raise NotFoundError(f"no checkpoint mint://{run_id}/{kind}/{name}")
        return _ckpt(row)

    def list_checkpoints(self, run_id: str) -> list[CheckpointRow]:
        """The run's unexpired checkpoints, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM checkpoints WHERE run_id = ? AND (expires_at IS NULL OR expires_at > ?) "
                "ORDER BY created_at, kind, name",
                (run_id, time.time()),
            ).fetchall()
        return [_ckpt(r) for r in rows]

    def list_expired(self) -> list[CheckpointRow]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM checkpoints WHERE expires_at <= ?", (time.time(),)).fetchall()
        return [_ckpt(r) for r in rows]

    def delete_checkpoint(self, run_id: str, kind: str, name: str) -> str:
        """Remove the row; returns its file name (for the caller to delete). NotFoundError if absent."""
        with self._write() as db:
            row = db.execute(
                "SELECT file FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?", (run_id, kind, name)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no checkpoint mint://{run_id}/{kind}/{name}")
            db.execute("DELETE FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?", (run_id, kind, name))
        return row["file"]

    def set_public(self, run_id: str, kind: str, name: str, public: bool) -> bool:
        """Set the public flag; returns its previous value. NotFoundError if absent."""
        with self._write() as db:
            row = db.execute(
                "SELECT public FROM checkpoints WHERE run_id = ? AND kind = ? AND name = ?", (run_id, kind, name)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no checkpoint mint://{run_id}/{kind}/{name}")
            db.execute(
                "UPDATE checkpoints SET public = ? WHERE run_id = ? AND kind = ? AND name = ?",
                (int(public), run_id, kind, name),
            )
        return bool(row["public"])

    def set_expiry(self, run_id: str, kind: str, name: str, expires_at: float | None) -> None:
        """Set (or clear, with None) the checkpoint's expiry time. NotFoundError if absent."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE checkpoints SET expires_at = ? WHERE run_id = ? AND kind = ? AND name = ?",
                (expires_at, run_id, kind, name),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no checkpoint mint://{run_id}/{kind}/{name}")
