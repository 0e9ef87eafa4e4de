"""Checkpoints and training runs, readable by their MinT names and by their Tinker names.

=================  ===================  ==========================================
MinT field         Tinker name          meaning
=================  ===================  ==========================================
Checkpoint.id      checkpoint_id        e.g. "weights/step-0010"
Checkpoint.type    checkpoint_type      "training" (full state) or "sampler" (weights)
Checkpoint.timestamp  time              creation time
Checkpoint.size    size_bytes           bytes on disk
Checkpoint.path    tinker_path          "mint://<run>/weights/<name>"
TrainingRun.id     training_run_id
TrainingRun.owner  model_owner
=================  ===================  ==========================================

Both names are accepted on construction (and in JSON), and both can be read; ``model_dump`` writes
the MinT names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Dict, List, Literal, Optional

from pydantic import AliasChoices, Field, model_validator
from typing_extensions import TypeAlias

from mint.types._base import ResponseModel

__all__ = [
    "Checkpoint",
    "CheckpointType",
    "CheckpointsListResponse",
    "Cursor",
    "ParsedCheckpointPath",
    "ParsedCheckpointTinkerPath",
    "TrainingRun",
    "TrainingRunsResponse",
    "WeightsInfoResponse",
]

CheckpointType: TypeAlias = Literal["training", "sampler"]
"""Kind of checkpoint: "training" (weights + optimizer state) or "sampler" (weights for sampling)."""

PATH_SCHEMES = ("mint://", "tinker://")
"""URI schemes a checkpoint path may use."""

_SEGMENT_TO_TYPE: Dict[str, CheckpointType] = {"weights": "training", "sampler_weights": "sampler"}


class ParsedCheckpointPath(ResponseModel):
    """The parts of a checkpoint path ``mint://<training_run_id>/<weights|sampler_weights>/<name>``.

    ``tinker://`` paths are accepted too. ``checkpoint_id`` is ``"<weights|sampler_weights>/<name>"``
    (as in the Tinker SDK).
    """

    path: str = Field(validation_alias=AliasChoices("path", "tinker_path"))
    """The full path."""

    training_run_id: str
    """The run the checkpoint belongs to."""

    checkpoint_type: CheckpointType
    """"training" for ``weights/``, "sampler" for ``sampler_weights/``."""

    checkpoint_id: str
    """``"weights/<name>"`` or ``"sampler_weights/<name>"``."""

    @classmethod
    def from_path(cls, path: str) -> "ParsedCheckpointPath":
        """Parse ``path``; raises ValueError naming the path when it is not a checkpoint path."""
        scheme = next((s for s in PATH_SCHEMES if path.startswith(s)), None)
        if scheme is None:
            raise ValueError(f"invalid checkpoint path {path!r}: must start with mint:// or tinker://")
        segments = path[len(scheme) :].split("/")
        if len(segments) != 3 or not all(segments):
            raise ValueError(
                f"invalid checkpoint path {path!r}: expected {scheme}<run_id>/weights/<name> "
                f"or {scheme}<run_id>/sampler_weights/<name>"
            )
        run_id, segment, name = segments
        if segment not in _SEGMENT_TO_TYPE:
            raise ValueError(
                f"invalid checkpoint path {path!r}: kind {segment!r} must be 'weights' or 'sampler_weights'"
            )
        return cls(
            path=path,
            training_run_id=run_id,
            checkpoint_type=_SEGMENT_TO_TYPE[segment],
            checkpoint_id=f"{segment}/{name}",
        )

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> "ParsedCheckpointPath":
        """Tinker spelling of ``from_path``."""
        return cls.from_path(tinker_path)

    @property
    def tinker_path(self) -> str:
        """Tinker name of ``path``."""
        return self.path


ParsedCheckpointTinkerPath = ParsedCheckpointPath


class Checkpoint(ResponseModel):
    """A saved checkpoint of a training run (see the module docstring for the Tinker names)."""

    id: str = Field(validation_alias=AliasChoices("id", "checkpoint_id"))
    """Unique identifier within the run, e.g. ``"weights/step-0010"``."""

    type: CheckpointType = Field(validation_alias=AliasChoices("type", "checkpoint_type"))
    """"training" or "sampler"."""

    timestamp: datetime = Field(validation_alias=AliasChoices("timestamp", "time"))
    """Creation time."""

    size: Optional[int] = Field(default=None, ge=0, validation_alias=AliasChoices("size", "size_bytes"))
    """Size on disk in bytes (None if unknown)."""

    public: bool = False
    """Whether the checkpoint is publicly accessible."""

    path: Optional[str] = Field(default=None, validation_alias=AliasChoices("path", "tinker_path"))
    """The ``mint://`` path that loads this checkpoint."""

    training_run_id: Optional[str] = None
    """The run the checkpoint belongs to (taken from ``path`` when not given)."""

    expires_at: Optional[datetime] = None
    """When the checkpoint expires (None = never)."""

    @model_validator(mode="after")
    def _run_from_path(self) -> "Checkpoint":
        if self.training_run_id is None and self.path is not None:
            try:
                run_id = ParsedCheckpointPath.from_path(self.path).training_run_id
            except ValueError:
                return self
            object.__setattr__(self, "training_run_id", run_id)
        return self

    @property
    def checkpoint_id(self) -> str:
        """Tinker name of ``id``."""
        return self.id

    @property
    def checkpoint_type(self) -> CheckpointType:
        """Tinker name of ``type``."""
        return self.type

    @property
    def time(self) -> datetime:
        """Tinker name of ``timestamp``."""
        return self.timestamp

    @property
    def size_bytes(self) -> Optional[int]:
        """Tinker name of ``size``."""
        return self.size

    @property
    def tinker_path(self) -> Optional[str]:
        """Tinker name of ``path``."""
        return self.path


def _latest(checkpoints: List[Checkpoint], kind: CheckpointType) -> Optional[Checkpoint]:
    of_kind = [c for c in checkpoints if c.type == kind]
    return max(of_kind, key=lambda c: c.timestamp) if of_kind else None


class TrainingRun(ResponseModel):
    """Metadata of a training run (one LoRA adapter being trained)."""

    id: str = Field(validation_alias=AliasChoices("id", "training_run_id"))
    """Unique identifier of the run."""

    base_model: str
    """The base model the adapter is trained on."""

    owner: str = Field(validation_alias=AliasChoices("owner", "model_owner"))
    """The user who created the run."""

    corrupted: bool = False
    """Whether the run encountered an unrecoverable error."""

    checkpoints: List[Checkpoint] = Field(default_factory=list)
    """Saved checkpoints, in any order."""

    created_at: Optional[datetime] = None
    """When the run was created."""

    is_lora: bool = True
    """Whether the run trains a LoRA adapter (always True in mint)."""

    lora_rank: Optional[int] = Field(default=None, ge=1)
    """LoRA rank of the adapter."""

    last_request_time: Optional[datetime] = None
    """Time of the last request made to the run."""

    last_checkpoint: Optional[Checkpoint] = None
    """Most recent "training" checkpoint (computed from ``checkpoints`` when not given)."""

    last_sampler_checkpoint: Optional[Checkpoint] = None
    """Most recent "sampler" checkpoint (computed from ``checkpoints`` when not given)."""

    user_metadata: Optional[Dict[str, str]] = None
    """Free-form metadata set by the user."""

    @model_validator(mode="after")
    def _fill_latest(self) -> "TrainingRun":
        if self.last_checkpoint is None:
            object.__setattr__(self, "last_checkpoint", _latest(self.checkpoints, "training"))
        if self.last_sampler_checkpoint is None:
            object.__setattr__(self, "last_sampler_checkpoint", _latest(self.checkpoints, "sampler"))
        return self

    @property
    def training_run_id(self) -> str:
        """Tinker name of ``id``."""
        return self.id

    @property
    def model_owner(self) -> str:
        """Tinker name of ``owner``."""
        return self.owner


class Cursor(ResponseModel):
    """Pagination state of a list response."""

    offset: int
    """Offset of the first item returned."""

    limit: int
    """Maximum number of items requested."""

    total_count: int
    """Total number of items available."""


class CheckpointsListResponse(ResponseModel):
    """A page of checkpoints."""

    checkpoints: List[Checkpoint]
    """The checkpoints of this page."""

    cursor: Optional[Cursor] = None
    """Pagination state (None when unpaginated)."""


class TrainingRunsResponse(ResponseModel):
    """A page of training runs."""

    training_runs: List[TrainingRun]
    """The runs of this page."""

    cursor: Optional[Cursor] = None
    """Pagination state (None when unpaginated)."""


class WeightsInfoResponse(ResponseModel):
    """What a checkpoint needs to be loaded (the Tinker fields first, then mint's extras)."""

    base_model: str
    """The base model the adapter was trained on."""

    is_lora: bool = True
    """Always True in mint."""

    lora_rank: Optional[int] = Field(default=None, ge=1)
    """LoRA rank of the adapter."""

    path: Optional[str] = Field(default=None, validation_alias=AliasChoices("path", "tinker_path"))
    """The checkpoint's ``mint://`` path."""

    checkpoint_type: Optional[CheckpointType] = None
    """"training" (weights + optimizer state) or "sampler" (weights)."""

    lora_alpha: Optional[float] = None
    """LoRA alpha (the adapter's output is scaled by ``lora_alpha / lora_rank``)."""

    train_attn: Optional[bool] = None
    """Whether the adapter covers the attention projections."""

    train_mlp: Optional[bool] = None
    """Whether the adapter covers the MLP projections."""

    train_unembed: Optional[bool] = None
    """Whether the adapter covers the unembedding (lm_head)."""

    size: Optional[int] = Field(default=None, ge=0, validation_alias=AliasChoices("size", "size_bytes"))
    """File size in bytes."""

    @property
    def size_bytes(self) -> Optional[int]:
        """Tinker name of ``size``."""
        return self.size
