"""Adapter weights and training state on disk, addressed by mint:// paths (storage: mint.storage)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mint import storage
from mint.engine.adapter_pool import AdapterSpec
from mint.errors import BadRequestError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PATH = re.compile(r"^(mint|tinker)://([A-Za-z0-9._-]+)/(weights|sampler_weights)/([A-Za-z0-9._-]+)$")
ADAPTER_FORMAT = "mint-lora-v1"
STATE_FORMAT = "mint-training-state-v1"
OPTIMIZER_PREFIX = "optimizer/"


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
        """The folder under the mint home that holds this checkpoint's file."""
        return storage.checkpoints.folder_of(self)


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
    path: CheckpointPath, tensors: dict[str, torch.Tensor], spec: AdapterSpec, base_model: str,
    ttl_seconds: int | None = None,
) -> int:
    """Store adapter weights (``<layer>.lora_a`` [r, in], ``<layer>.lora_b`` [r, out]) as checkpoint ``path``:
    atomic, checksummed, registered in the metadata store. Returns the file size in bytes."""
    metadata = {"base_model": base_model, "format": ADAPTER_FORMAT, **spec.to_metadata()}
    return storage.save_checkpoint(path, tensors, metadata, base_model, ttl_seconds).size


def load_adapter(path: CheckpointPath) -> tuple[dict[str, torch.Tensor], AdapterSpec, str]:
    """The verified adapter weights of a checkpoint (sampler or training state): (tensors, spec, base_model).

    Raises NotFoundError, PermissionDeniedError or CheckpointCorruptedError (see mint.storage).
    """
    tensors, metadata = storage.load_checkpoint(path)
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    return weights, AdapterSpec.from_metadata(metadata), metadata.get("base_model", "")


def read_metadata(path: CheckpointPath) -> dict[str, str]:
    """The metadata stored with a checkpoint (base_model, rank, alpha, kinds, format) without its tensors."""
    return storage.checkpoint_metadata(path)


def save_training_state(
    path: CheckpointPath,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor],
    spec: AdapterSpec,
    base_model: str,
    ttl_seconds: int | None = None,
) -> int:
    """Store weights and optimizer state in one checkpoint file (one atomic commit). ``optimizer`` keys are
    stored under ``optimizer/``. Returns the file size in bytes."""
    tensors = dict(weights)
    tensors.update({OPTIMIZER_PREFIX + k: v for k, v in optimizer.items()})
    metadata = {"base_model": base_model, "format": STATE_FORMAT, **spec.to_metadata()}
    return storage.save_checkpoint(path, tensors, metadata, base_model, ttl_seconds).size


def load_training_state(
    path: CheckpointPath,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], AdapterSpec, str]:
    """The verified (weights, optimizer tensors without the ``optimizer/`` prefix, spec, base_model) of a
    training-state checkpoint. BadRequestError if ``path`` holds no optimizer state."""
    tensors, metadata = storage.load_checkpoint(path)
    if metadata.get("format") != STATE_FORMAT:
        raise BadRequestError(f"{path} holds weights only, no optimizer state", field="path")
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer = {k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIMIZER_PREFIX)}
    return weights, optimizer, AdapterSpec.from_metadata(metadata), metadata.get("base_model", "")
