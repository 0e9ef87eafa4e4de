"""The SQLite metadata store: runs, checkpoint rows, paging, public flag, expiry, multi-process safety."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mint
from mint.errors import NotFoundError
from mint.storage.db import Store, current_user


def test_runs_and_paging(tmp_path):
    st = Store(tmp_path)
    for i in range(5):
        st.create_run(f"r{i}", "base", "alice" if i != 2 else "bob", 4, {"i": str(i)} if i == 0 else None)
        time.sleep(0.002)
    st.create_run("r0", "other", "eve", 8)  # an existing id is left alone
    run = st.get_run("r0")
    assert (run.base_model, run.owner, run.lora_rank, run.user_metadata) == ("base", "alice", 4, {"i": "0"})
    page, total = st.list_runs("alice", limit=2, offset=0)
    assert total == 4 and [r.id for r in page] == ["r4", "r3"]
    page, _ = st.list_runs("alice", limit=2, offset=2)
    assert [r.id for r in page] == ["r1", "r0"]
    with pytest.raises(NotFoundError):
        st.get_run("nope")
    st.mark_corrupted("r1")
    assert st.get_run("r1").corrupted and not st.get_run("r0").corrupted


def test_checkpoint_rows(tmp_path):
    st = Store(tmp_path)
    assert st.put_checkpoint("r", "weights", "a", "f1", "s1", 10, None, "base", "alice") is None
    assert st.get_run("r").owner == "alice"  # run row created on demand
    assert st.put_checkpoint("r", "weights", "a", "f2", "s2", 20, None, "base", "alice") == "f1"
    row = st.get_checkpoint("r", "weights", "a")
    assert (row.file, row.sha256, row.size, row.public, row.path) == ("f2", "s2", 20, False, "mint://r/weights/a")
    st.put_checkpoint("r", "sampler_weights", "a", "f3", "s3", 5, None, "base", "alice")
    assert [(c.kind, c.name) for c in st.list_checkpoints("r")] == [("weights", "a"), ("sampler_weights", "a")]
    assert st.set_public("r", "weights", "a", True) is False
    assert st.get_checkpoint("r", "weights", "a").public
    page, total = st.list_runs("zed", 10, 0, include_public=True)
    assert total == 1 and page[0].id == "r"
    assert st.delete_checkpoint("r", "weights", "a") == "f2"
    with pytest.raises(NotFoundError):
        st.get_checkpoint("r", "weights", "a")
    with pytest.raises(NotFoundError):
        st.delete_checkpoint("r", "weights", "a")
    with pytest.raises(sqlite3.IntegrityError):
        st.put_checkpoint("r", "other", "a", "f", "s", 1, None, "base", "alice")


def test_expiry(tmp_path):
    st = Store(tmp_path)
    st.put_checkpoint("r", "weights", "old", "f1", "s", 1, time.time() - 1, "base", "u")
    st.put_checkpoint("r", "weights", "new", "f2", "s", 1, time.time() + 3600, "base", "u")
    assert [c.name for c in st.list_checkpoints("r")] == ["new"]
    assert [c.name for c in st.list_expired()] == ["old"]
    with pytest.raises(NotFoundError):
        st.get_checkpoint("r", "weights", "old")
    st.set_expiry("r", "weights", "old", None)
    assert st.get_checkpoint("r", "weights", "old").expires_at is None


def test_wal_mode(tmp_path):
    Store(tmp_path)
    with sqlite3.connect(tmp_path / "mint.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# The writers load only db.py (and mint/errors.py), not torch: a stub ``mint`` package points at the sources.
_WRITER = """
import importlib.util, sys, types
pkg = types.ModuleType("mint"); pkg.__path__ = [sys.argv[3]]; sys.modules["mint"] = pkg
spec = importlib.util.spec_from_file_location("mint_db", sys.argv[3] + "/storage/db.py")
db = sys.modules["mint_db"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(db)
st = db.Store(sys.argv[1])
for i in range(25):
    st.put_checkpoint(f"run{sys.argv[2]}", "weights", f"c{i}", f"f{i}", "s", i, None, "base", "u")
"""


def test_concurrent_processes(tmp_path):
    src = str(Path(mint.__file__).parent)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(w), src]) for w in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    st = Store(tmp_path)
    assert all(len(st.list_checkpoints(f"run{w}")) == 25 for w in range(3))


def test_current_user(monkeypatch):
    monkeypatch.setenv("MINT_USER", "carol")
    assert current_user() == "carol"
    monkeypatch.delenv("MINT_USER")
    assert current_user()
