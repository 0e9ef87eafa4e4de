"""Checkpoints through mint.storage: save/replace/load, damage detection, owners and public flag, expiry."""

from __future__ import annotations

import time

import pytest
import torch

from mint import storage
from mint.engine.adapter_files import CheckpointPath
from mint.errors import CheckpointCorruptedError, NotFoundError, PermissionDeniedError
from mint.storage.files import TMP_PREFIX


def _files(addr):
    return sorted(p.name for p in storage.checkpoints.folder_of(addr).iterdir())


def test_save_replace_load(mint_home):
    addr = CheckpointPath("st-run1", "weights", "c")
    row1 = storage.save_checkpoint(addr, {"x": torch.ones(3)}, {"format": "f"}, "base")
    row2 = storage.save_checkpoint(addr, {"x": torch.full((3,), 2.0)}, {"format": "f"}, "base")
    assert row1.file != row2.file and _files(addr) == [row2.file]  # the replaced file is gone
    tensors, meta = storage.load_checkpoint(addr)
    assert torch.equal(tensors["x"], torch.full((3,), 2.0)) and meta == {"format": "f"}
    assert storage.checkpoint_metadata(addr) == {"format": "f"}
    assert row2.size == (storage.checkpoints.folder_of(addr) / row2.file).stat().st_size
    assert storage.store().get_run("st-run1").base_model == "base"


def test_damaged_checkpoint_marks_run_corrupted(mint_home):
    addr = CheckpointPath("st-run2", "sampler_weights", "c")
    row = storage.save_checkpoint(addr, {"x": torch.randn(100)}, {}, "base")
    file = storage.checkpoints.folder_of(addr) / row.file
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    assert not storage.store().get_run("st-run2").corrupted
    with pytest.raises(CheckpointCorruptedError, match="mint://st-run2/sampler_weights/c"):
        storage.load_checkpoint(addr)
    assert storage.store().get_run("st-run2").corrupted


def test_missing_file_is_corruption(mint_home):
    addr = CheckpointPath("st-run3", "weights", "c")
    row = storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base")
    (storage.checkpoints.folder_of(addr) / row.file).unlink()
    with pytest.raises(CheckpointCorruptedError, match="missing"):
        storage.load_checkpoint(addr)
    assert storage.store().get_run("st-run3").corrupted


def test_not_found_and_delete(mint_home):
    addr = CheckpointPath("st-run4", "weights", "c")
    with pytest.raises(NotFoundError):
        storage.load_checkpoint(addr)
    storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base")
    storage.delete_checkpoint(addr)
    assert _files(addr) == []
    with pytest.raises(NotFoundError):
        storage.load_checkpoint(addr)


def test_other_users_need_public(mint_home, monkeypatch):
    monkeypatch.setenv("MINT_USER", "alice")
    addr = CheckpointPath("st-run5", "weights", "c")
    storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base")
    monkeypatch.setenv("MINT_USER", "bob")
    with pytest.raises(PermissionDeniedError, match="alice"):
        storage.load_checkpoint(addr)
    with pytest.raises(PermissionDeniedError):
        storage.delete_checkpoint(addr)
    storage.store().set_public("st-run5", "weights", "c", True)
    storage.load_checkpoint(addr)  # public: readable by anyone


def test_ttl(mint_home):
    addr = CheckpointPath("st-run6", "weights", "c")
    storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base", ttl_seconds=1)
    storage.load_checkpoint(addr)
    storage.store().set_expiry("st-run6", "weights", "c", time.time() - 1)
    with pytest.raises(NotFoundError):
        storage.load_checkpoint(addr)
    assert storage.purge_expired() >= 1
    assert _files(addr) == []
    with pytest.raises(Exception, match="ttl_seconds"):
        storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base", ttl_seconds=0)


def test_failed_commit_leaves_no_file(mint_home, monkeypatch):
    addr = CheckpointPath("st-run7", "weights", "c")
    storage.save_checkpoint(addr, {"x": torch.ones(2)}, {}, "base")
    before = _files(addr)

    def boom(*args, **kwargs):
        raise RuntimeError("db down")

    monkeypatch.setattr(storage.db.Store, "put_checkpoint", boom)
    with pytest.raises(RuntimeError):
        storage.save_checkpoint(addr, {"x": torch.zeros(2)}, {}, "base")
    monkeypatch.undo()
    assert _files(addr) == before and not any(f.startswith(TMP_PREFIX) for f in before)
    assert torch.equal(storage.load_checkpoint(addr)[0]["x"], torch.ones(2))


def test_save_tidies_expired_and_stale_temporaries(mint_home):
    import os

    expired = CheckpointPath("st-run8", "weights", "old")
    storage.save_checkpoint(expired, {"x": torch.randn(4)}, {}, "base")
    storage.store().set_expiry("st-run8", "weights", "old", time.time() - 1)
    addr = CheckpointPath("st-run8", "weights", "new")
    folder = storage.checkpoints.folder_of(addr)
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / f"{TMP_PREFIX}stale", folder / f"{TMP_PREFIX}fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200,) * 2)
    storage.save_checkpoint(addr, {"x": torch.randn(4)}, {}, "base")
    assert not stale.exists() and fresh.exists()  # a young temporary may belong to a save in progress
    assert _files(expired) == [] and storage.store().list_expired() == []
