"""Checkpoints on disk and in the metadata database, addressed by ``(run_id, kind, name)``.

A save writes a new uniquely named safetensors file under ``<home>/runs/<run_id>/<kind>/<name>/``
(temporary file, fsync, rename), then commits its row (file name, sha256, size) to SQLite; the file it
replaces is deleted afterwards. A crash at any moment therefore leaves either the old row (pointing at the
old, complete file) or the new row (pointing at the new, complete file); leftovers are only unreferenced
files. A load verifies the sha256 before parsing; a mismatch raises CheckpointCorruptedError and marks the
run ``corrupted``.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import torch

from mint.errors import BadRequestError, CheckpointCorruptedError, NotFoundError, PermissionDeniedError
from mint.home import mint_home
from mint.storage.db import CheckpointRow, RunRow, Store, current_user
from mint.storage.files import read_safetensors, remove_stale_temporaries, write_safetensors

KIND_TO_TYPE = {"weights": "training", "sampler_weights": "sampler"}


class Address(Protocol):
    run_id: str
    kind: str
    name: str


def store() -> Store:
    """The metadata store of the current data directory (``$MINT_HOME``)."""
    return Store(mint_home())


def folder_of(addr: Address) -> Path:
    """``<home>/runs/<run_id>/<kind>/<name>``: where a checkpoint's files live."""
    return mint_home() / "runs" / addr.run_id / addr.kind / addr.name


def check_ttl(ttl_seconds: int | None) -> float | None:
    """The expiry time for ``ttl_seconds`` from now (None = never); BadRequestError unless a positive int."""
    if ttl_seconds is None:
        return None
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise BadRequestError("must be a positive number of seconds or None", field="ttl_seconds")
    return time.time() + ttl_seconds


def save_checkpoint(
    addr: Address, tensors: dict[str, torch.Tensor], metadata: dict[str, str], base_model: str,
    ttl_seconds: int | None = None,
) -> CheckpointRow:
    """Durably store ``tensors`` (+ string ``metadata``) as checkpoint ``addr``, replacing any previous one
    of that name. Returns the committed row (size in bytes, sha256, created_at)."""
    expires_at = check_ttl(ttl_seconds)
    st = store()
    folder = folder_of(addr)
    file, sha, size = write_safetensors(folder, tensors, metadata)
    try:
        old = st.put_checkpoint(
            addr.run_id, addr.kind, addr.name, file, sha, size, expires_at, base_model, current_user()
        )
    except BaseException:
        (folder / file).unlink(missing_ok=True)
        raise
    if old is not None:
        (folder / old).unlink(missing_ok=True)
    row = st.get_checkpoint(addr.run_id, addr.kind, addr.name)
    _tidy(folder)
    return row


def _tidy(folder: Path) -> None:
    """Best-effort housekeeping after a save: temporaries of long-dead writers, expired checkpoints."""
    try:
        remove_stale_temporaries(folder)
        purge_expired()
    except Exception:  # noqa: BLE001 - never fail a committed save over housekeeping
        pass


def _readable_row(st: Store, addr: Address) -> tuple[CheckpointRow, RunRow]:
    row = st.get_checkpoint(addr.run_id, addr.kind, addr.name)
    run = st.get_run(addr.run_id)
    if run.owner != current_user() and not row.public:
        raise PermissionDeniedError(
            f"checkpoint {row.path} belongs to {run.owner!r} and is not public"
        )
    return row, run


def load_checkpoint(addr: Address) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The verified (tensors, metadata) of checkpoint ``addr``.

    Raises NotFoundError (no such checkpoint, or expired), PermissionDeniedError (another user's private
    checkpoint) or CheckpointCorruptedError (file missing or damaged; the run is then marked corrupted).
    """
    st = store()
    for attempt in range(3):
        row, _ = _readable_row(st, addr)
        try:
            return read_safetensors(folder_of(addr) / row.file, row.sha256, row.path)
        except CheckpointCorruptedError:
            # A concurrent save may have replaced (and deleted) the file we looked up: retry with the new row.
            try:
                current = st.get_checkpoint(addr.run_id, addr.kind, addr.name)
            except NotFoundError:
                raise NotFoundError(f"checkpoint {row.path} was deleted while being loaded") from None
            if current.file != row.file and attempt < 2:
                continue
            st.mark_corrupted(addr.run_id)
            raise
    raise AssertionError("unreachable")


def checkpoint_metadata(addr: Address) -> dict[str, str]:
    """The string metadata stored with checkpoint ``addr`` (base_model, rank, alpha, kinds, format), read
    from the file header without loading or verifying the tensors."""
    import json
    import struct

    st = store()
    row, _ = _readable_row(st, addr)
    try:
        with open(folder_of(addr) / row.file, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        return dict(header.get("__metadata__") or {})
    except (OSError, ValueError, struct.error) as exc:
        st.mark_corrupted(addr.run_id)
        raise CheckpointCorruptedError(f"checkpoint {row.path}: cannot read its header ({exc})") from exc


def delete_checkpoint(addr: Address) -> None:
    """Delete checkpoint ``addr`` (row, then file). Only the run's owner may; NotFoundError if absent."""
    st = store()
    run = st.get_run(addr.run_id)
    if run.owner != current_user():
        raise PermissionDeniedError(f"run {addr.run_id} belongs to {run.owner!r}")
    file = st.delete_checkpoint(addr.run_id, addr.kind, addr.name)
    (folder_of(addr) / file).unlink(missing_ok=True)


def purge_expired() -> int:
    """Delete every expired checkpoint (rows and files); returns how many."""
    st = store()
    count = 0
    for row in st.list_expired():
        try:
            file = st.delete_checkpoint(row.run_id, row.kind, row.name)
        except NotFoundError:
            continue
        (folder_of(row) / file).unlink(missing_ok=True)
        count += 1
    return count


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)


def to_checkpoint(row: CheckpointRow):
    """The public ``types.Checkpoint`` of a row."""
    from mint import types

    return types.Checkpoint(
        id=f"{row.kind}/{row.name}", type=KIND_TO_TYPE[row.kind], timestamp=_time(row.created_at), size=row.size,
        public=row.public, path=row.path, training_run_id=row.run_id, expires_at=_time(row.expires_at),
    )


def to_training_run(run: RunRow, rows: list[CheckpointRow]):
    """The public ``types.TrainingRun`` of a run row and its checkpoint rows."""
    from mint import types

    return types.TrainingRun(
        id=run.id, base_model=run.base_model, owner=run.owner, corrupted=run.corrupted,
        checkpoints=[to_checkpoint(r) for r in rows], created_at=_time(run.created_at),
        lora_rank=run.lora_rank, last_request_time=_time(run.last_request_time), user_metadata=run.user_metadata,
    )
