"""Durable storage: checkpoint files (atomic, checksummed safetensors) and run/checkpoint metadata (SQLite)."""

from mint.storage.checkpoints import (
    checkpoint_metadata,
    delete_checkpoint,
    load_checkpoint,
    purge_expired,
    save_checkpoint,
    store,
    to_checkpoint,
    to_training_run,
)
from mint.storage.db import CheckpointRow, RunRow, Store, acting_user, current_user

__all__ = [
    "CheckpointRow",
    "RunRow",
    "Store",
    "acting_user",
    "checkpoint_metadata",
    "current_user",
    "delete_checkpoint",
    "load_checkpoint",
    "purge_expired",
    "save_checkpoint",
    "store",
    "to_checkpoint",
    "to_training_run",
]
