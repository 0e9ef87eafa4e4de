"""Atomic, checksummed safetensors files."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
import torch

from mint.errors import CheckpointCorruptedError
from mint.storage.files import TMP_PREFIX, read_safetensors, remove_stale_temporaries, write_safetensors


def test_round_trip_and_checksum(tmp_path):
    tensors = {"a": torch.randn(3, 4), "steps": torch.arange(5, dtype=torch.int64), "h": torch.randn(2).half()}
    name, sha, size = write_safetensors(tmp_path / "f", tensors, {"k": "v"})
    file = tmp_path / "f" / name
    assert file.stat().st_size == size
    assert hashlib.sha256(file.read_bytes()).hexdigest() == sha  # independent check of the stored digest
    loaded, meta = read_safetensors(file, sha, "x")
    assert meta == {"k": "v"}
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    assert not [p for p in file.parent.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_each_write_gets_a_new_file(tmp_path):
    a = write_safetensors(tmp_path, {"x": torch.zeros(1)}, {})
    b = write_safetensors(tmp_path, {"x": torch.zeros(1)}, {})
    assert a[0] != b[0] and a[1] == b[1]
    assert (tmp_path / a[0]).exists() and (tmp_path / b[0]).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damage_is_detected(tmp_path, damage):
    name, sha, _ = write_safetensors(tmp_path, {"x": torch.randn(64)}, {})
    file = tmp_path / name
    data = bytearray(file.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x01
        file.write_bytes(bytes(data))
    elif damage == "truncate":
        file.write_bytes(bytes(data[:-10]))
    else:
        file.unlink()
    with pytest.raises(CheckpointCorruptedError, match="ckpt-name"):
        read_safetensors(file, sha, "ckpt-name")


def test_only_old_temporaries_are_removed(tmp_path):
    old, new = tmp_path / f"{TMP_PREFIX}old", tmp_path / f"{TMP_PREFIX}new"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert remove_stale_temporaries(tmp_path) == 1
    assert not old.exists() and new.exists()
