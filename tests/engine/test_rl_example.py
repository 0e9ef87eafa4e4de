"""examples/rl.py runs end to end on the embedded model (slow: loads SmolLM2, a couple of RL steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_rl_example_runs_and_reports(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), MINT_HOME=os.environ.get("MINT_HOME", str(tmp_path)))
    args = ["--steps", "2", "--questions", "2", "--group", "4", "--eval-questions", "4", "--loss", "ppo"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rl.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    steps = [line for line in lines if line.strip().split(" ")[0] in {"0", "1"}]
    assert len(steps) == 2
    for line in steps:
        reward, correct = (float(v) for v in line.split()[1:3])
        assert 0.0 <= reward <= correct <= 1.0
    assert any(line.startswith("greedy exact answers on 4 held-out questions") for line in lines)
