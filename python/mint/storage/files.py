"""Crash-safe checkpoint files: write to a temporary file, fsync, rename; read back verified by sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from mint.errors import CheckpointCorruptedError

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_safetensors(folder: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str, int]:
    """Serialise ``tensors`` (any dtypes/shapes, made contiguous) with string ``metadata`` into a new file
    under ``folder``, atomically: temporary file, fsync, rename to a fresh unique name, fsync the folder.

    Returns (file name, sha256 hex digest of the file bytes, size in bytes). The file never replaces an
    existing one, so a reader of an older file (or a crash at any moment) never sees a partial file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = save_bytes({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    digest = hashlib.sha256(data).hexdigest()
    name = f"{uuid.uuid4().hex[:12]}.safetensors"
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(folder)
    return name, digest, len(data)


def read_safetensors(file: Path, sha256: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``file``, check its sha256 against ``sha256`` and return (tensors, metadata).

    Raises CheckpointCorruptedError (naming ``what``) when the file is missing, its bytes do not match the
    recorded checksum, or it does not parse as safetensors.
    """
    try:
        data = Path(file).read_bytes()
    except FileNotFoundError:
        raise CheckpointCorruptedError(f"checkpoint {what}: its file {file} is missing") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise CheckpointCorruptedError(
            f"checkpoint {what} is damaged: sha256 of {file} is {actual[:16]}..., expected {sha256[:16]}..."
        )
    try:
        tensors = load_bytes(data)
        metadata = _metadata(data)
    except Exception as exc:  # noqa: BLE001 - a checksummed but unparsable file is still damage
        raise CheckpointCorruptedError(f"checkpoint {what}: {file} is not a valid safetensors file ({exc})") from exc
    return tensors, metadata


def _metadata(data: bytes) -> dict[str, str]:
    import json
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__") or {})


def remove_stale_temporaries(folder: Path, min_age_s: float = 3600.0) -> int:
    """Delete temporary files older than ``min_age_s`` that a killed writer left in ``folder`` (younger ones
    may belong to a save in progress); returns how many were removed."""
    import time

    removed = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_PREFIX) and time.time() - entry.stat().st_mtime >= min_age_s:
                try:
                    entry.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed
