"""The AMX tile kernels behind the bf16 CPU LoRA ops (csrc/cpu/lora_amx.cpp).

On CPUs with AMX-BF16 every bf16 product (shrink, expand, grad_h, grad_x and the weight gradients) runs on
tiles of 16 rows x 16 outputs x 32 products, with weights packed per thread and slot: full and edge tiles by
an in-register transpose of masked row loads, blocks of fewer than 16 rows on m-row tiles, a k that is not a
multiple of 32 through a zero-padded tail; weight gradients over one or two 16-rank tiles and 32-token
chunks, zero-padded past the slot's tokens. The cases sit on and around each of those boundaries (on other
CPUs they exercise the AVX-512 / AVX2 kernels, which must give the same results to bf16 tolerance). With
AMX, the results are also compared with the same process run with MINT_CPU_AMX=0 (the vector kernels):
both are one rounding of the same fp32 sums.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ops.test_lora_fast_paths import check_all, make

ops = torch.ops.mint


def cpu_has_amx() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags and " amx_tile" in flags


# (segment lengths, slot per segment, rank per slot, R, in, out)
AMX_CASES = {
    # rows per block around the 16-row tile, in one slot and across slots
    "rows_1_15_16_17": ([1, 15, 16, 17], [0, 1, 2, 3], [16] * 4, 16, 64, 64),
    "rows_33_one_slot": ([33], [0], [32], 32, 96, 48),
    # k around the 32-product chunk (full-tile transpose only where 32 divides k)
    "k_1": ([5, 18], [0, 1], [16, 16], 16, 1, 32),
    "k_31": ([5, 18], [0, 1], [16, 16], 16, 31, 32),
    "k_33": ([5, 18], [0, 1], [16, 16], 16, 33, 32),
    "k_100": ([17, 4], [1, 0], [16, 16], 16, 100, 32),
    # ranks around the 16-output accumulator tiles and the 32-rank expand chunk, up to four tiles
    "ranks_1_15_17": ([6, 20, 9], [0, 1, 2], [1, 15, 17], 17, 64, 40),
    "ranks_31_32_33": ([18, 3, 16], [0, 1, 2], [31, 32, 33], 33, 70, 50),
    "ranks_48_64": ([21, 16], [1, 0], [48, 64], 64, 128, 96),
    # output columns around the 16-column groups and the 64-column pass; wide rows split across threads
    "cols_1_15_17": ([9, 8], [0, 1], [8, 8], 8, 40, 17),
    "cols_63_65": ([16, 2], [0, 1], [16, 16], 16, 40, 65),
    "cols_1000_one_block": ([3], [0], [16], 16, 64, 1000),
    # weight gradients: tokens per slot around the 32-token chunk, gathered (non-adjacent) segments
    "tokens_31_32_33_gathered": ([31, 32, 20, 13], [0, 1, 2, 2], [40, 17, 64], 64, 48, 36),
}


@pytest.mark.parametrize("case", list(AMX_CASES))
def test_amx_boundaries_match_formulas(case):
    check_all(AMX_CASES[case], torch.bfloat16)


def test_expand_ignores_h_past_the_rank():
    """h beyond a slot's rank is never read (the AMX expand copies only the rank's columns of h)."""
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make([7, 18], [0, 1], [5, 20], 20, 24, 40, torch.bfloat16)
    clean = h.clone()
    clean[:7, 5:] = 0
    h[:7, 5:] = float("nan")
    want = ops.lora_expand(y, clean, b, indptr, seg, rk, sc)
    got = ops.lora_expand(y, h, b, indptr, seg, rk, sc)
    assert torch.equal(got, want)


SCRIPT = """
import sys, torch
import mint  # noqa: F401
sys.path.insert(0, {root!r})
from tests.ops.test_lora_fast_paths import make
ops = torch.ops.mint
out = {{}}
for name, case in {cases!r}.items():
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make(*case, torch.bfloat16)
    out[name] = [ops.lora_shrink(x, a, indptr, seg, rk), ops.lora_expand(y, h, b, indptr, seg, rk, sc),
                 *ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc),
                 *ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)]
torch.save(out, sys.argv[1])
"""


@pytest.mark.skipif(not cpu_has_amx() or os.environ.get("MINT_CPU_AMX") == "0",
                    reason="the CPU has no AMX-BF16, or MINT_CPU_AMX=0 turns it off")
def test_amx_agrees_with_the_vector_kernels(tmp_path):
    """The same bf16 ops with AMX (this process) and without (MINT_CPU_AMX=0): at most one bf16 rounding apart."""
    names = ("rows_1_15_16_17", "k_33", "ranks_48_64", "cols_63_65", "tokens_31_32_33_gathered")
    cases = {k: AMX_CASES[k] for k in names}
    root = str(Path(__file__).resolve().parents[2])
    path = tmp_path / "vector.pt"
    env = dict(os.environ, MINT_CPU_AMX="0")
    subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, cases=cases), str(path)], env=env, check=True,
                   timeout=120)
    vector = torch.load(path)
    for name, case in cases.items():
        x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make(*case, torch.bfloat16)
        amx = [ops.lora_shrink(x, a, indptr, seg, rk), ops.lora_expand(y, h, b, indptr, seg, rk, sc),
               *ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc),
               *ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)]
        for what, got, other in zip(["h", "out", "grad_h", "grad_b", "grad_x", "grad_a"], amx, vector[name]):
            ulp = 2.0**-7 * other.float().abs() + 1e-6 * max(other.float().abs().max().item(), 1.0)
            assert ((got.float() - other.float()).abs() <= ulp).all(), f"{name}: {what}"
