"""Adapter weights on disk: safetensors files under the mint home, addressed by mint:// paths."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from mint.engine.adapter_pool import AdapterSpec
from mint.errors import BadRequestError, NotFoundError
from mint.home import mint_home

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PATH = re.compile(r"^(mint|tinker)://([A-Za-z0-9._-]+)/(weights|sampler_weights)/([A-Za-z0-9._-]+)$")
ADAPTER_FILE = "adapter.safetensors"


@dataclass(frozen=True)
class CheckpointPath:
    """A parsed ``mint://<run_id>/<kind>/<name>`` path (kind: ``weights`` or ``sampler_weights``)."""

    run_id: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"mint://{self.run_id}/{self.kind}/{self.name}"

    @property
    def folder(self) -> Path:
        return mint_home() / "runs" / self.run_id / self.kind / self.name


def check_name(name: str, field: str = "name") -> str:
    """A checkpoint name: letters, digits, '.', '_' and '-', no path separators, not '..'."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise BadRequestError(
            f"{name!r} is not a valid checkpoint name (1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit)",
            field=field,
        )
    return name


def parse_path(path: str, field: str = "model_path") -> CheckpointPath:
    """Parse a ``mint://`` (or ``tinker://``) checkpoint path; BadRequestError naming ``field`` if malformed."""
    match = _PATH.match(path) if isinstance(path, str) else None
    if not match or ".." in path:
        raise BadRequestError(
            f"{path!r} is not a checkpoint path like mint://<run_id>/sampler_weights/<name>", field=field
        )
    return CheckpointPath(run_id=match.group(2), kind=match.group(3), name=match.group(4))


def save_adapter(
    path: CheckpointPath, tensors: dict[str, torch.Tensor], spec: AdapterSpec, base_model: str
) -> int:
    """Write the adapter atomically (temporary file, fsync, rename). Returns the file size in bytes."""
    folder = path.folder
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"base_model": base_model, "format": "mint-lora-v1", **spec.to_metadata()}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / ADAPTER_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return (folder / ADAPTER_FILE).stat().st_size


def load_adapter(path: CheckpointPath) -> tuple[dict[str, torch.Tensor], AdapterSpec, str]:
    """Read an adapter written by :func:`save_adapter`: (tensors, spec, base_model)."""
    file = path.folder / ADAPTER_FILE
    if not file.exists():
        raise NotFoundError(f"no checkpoint at {path}")
    with safe_open(str(file), framework="pt") as fh:
        metadata = fh.metadata() or {}
    tensors = load_file(str(file))
    return tensors, AdapterSpec.from_metadata(metadata), metadata.get("base_model", "")


def read_metadata(path: CheckpointPath) -> dict[str, str]:
    """The metadata stored with an adapter (base_model, rank, alpha, kinds) without loading its tensors."""
    file = path.folder / ADAPTER_FILE
    if not file.exists():
        raise NotFoundError(f"no checkpoint at {path}")
    with safe_open(str(file), framework="pt") as fh:
        return dict(fh.metadata() or {})
