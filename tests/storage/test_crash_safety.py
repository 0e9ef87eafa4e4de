"""SIGKILL a process at random moments while it runs save_state: nothing half-written is ever listed, and
the previous checkpoint always loads and verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mint
from mint import storage
from mint.engine.adapter_files import load_training_state, parse_path
from mint.storage.files import TMP_PREFIX

ROUNDS = 32

_SAVER = """
import sys
import mint
from mint import types
trainer = mint.ServiceClient().create_training_client_from_state_with_optimizer(sys.argv[1])
datum = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7, 8]), loss_fn_inputs={"target_tokens": [6, 7, 8, 9]})
trainer.forward_backward([datum]).result()
trainer.optim_step(types.AdamParams(learning_rate=1e-3)).result()
trainer.save_state("a").result()
print("READY", flush=True)
i = 0
while True:
    name = ("a", "b", f"n{i}")[i % 3]  # overwrite existing names and add new ones
    print(f"SAVING {i}", flush=True)
    trainer.save_state(name).result()
    print(f"SAVED {i}", flush=True)
    i += 1
"""


def _check_all_listed(user_runs: list[str]) -> int:
    """Every listed checkpoint loads and verifies; returns how many there are."""
    st = storage.store()
    count = 0
    for run_id in user_runs:
        assert not st.get_run(run_id).corrupted, run_id
        for row in st.list_checkpoints(run_id):
            weights, optim, spec, _ = load_training_state(parse_path(row.path))  # sha256 verified
            assert spec.rank == 32 and weights and "steps" in optim
            count += 1
    return count


@pytest.mark.slow
def test_sigkill_during_save_state(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("MINT_USER", f"crash-{time.monotonic_ns()}")
    trainer = mint.ServiceClient().create_lora_training_client(base_model=tiny_llama, rank=32, seed=0)
    previous = trainer.save_state("previous").result().path
    expected, expected_optim, _, _ = load_training_state(parse_path(previous))
    env = {**os.environ, "PYTHONPATH": str(Path(mint.__file__).parents[1])}
    rng = random.Random(0)
    runs, mid_save = [trainer.model_id], 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-c", _SAVER, previous], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            line = proc.stdout.readline()
            assert line.strip() == "READY", line + proc.stderr.read()[-3000:]
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = proc.stdout.read().split()
        if lines and lines[-2] == "SAVING":
            mid_save += 1
        assert proc.returncode == -signal.SIGKILL
        runs = [r.id for r in storage.store().list_runs(storage.current_user(), 1000, 0)[0]]
        assert len(runs) == round_ + 2
        # The previous checkpoint loads, verifies and is unchanged.
        weights, optim, _, _ = load_training_state(parse_path(previous))
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
        assert all(torch.equal(optim[k], expected_optim[k]) for k in expected_optim)
        assert _check_all_listed(runs) >= round_ + 2
    assert mid_save >= ROUNDS // 3, f"only {mid_save} of {ROUNDS} kills landed inside save_state"
    # The real client restores the previous checkpoint after all that.
    trainer.load_state_with_optimizer(previous).result()
    # Killed writers leave at most temporary files behind, never listed.
    leftovers = [p for p in (storage.checkpoints.mint_home() / "runs").rglob(f"{TMP_PREFIX}*")]
    listed_files = {row.file for r in runs for row in storage.store().list_checkpoints(r)}
    assert not {p.name for p in leftovers} & listed_files
