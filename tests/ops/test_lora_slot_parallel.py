"""The slot-parallel path of the CPU LoRA kernels (csrc/cpu/lora.cpp, for_each_slot).

With two or more intra-op threads and no slot dominating the rows, each op runs its slots in parallel
(slots packed into one bin per thread, each GEMM single-threaded); a plan dominated by one slot runs
serially with BLAS's threads. Both ways are checked against the per-segment float32 formulas of
tests/ops/test_lora_fast_paths.py (NaN-primed outputs, so an unwritten element shows), for every op,
with gathered (non-adjacent) segments, ranks below R, unused slots, -1 segments and bf16, at 1, 2 and
3 threads; repeats are bit-identical.
"""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_lora_fast_paths import check_all

CASES = {
    # balanced: every thread count takes the parallel path
    "balanced_contiguous": ([40, 36, 44, 38, 41, 39], [0, 1, 2, 3, 4, 5], [16] * 6, 16, 96, 72),
    # gathered segments (a slot's rows in several ranges), ranks < R, unused slot, -1 segment
    "balanced_gathered": ([9, 11, 10, 8, 12, 7, 9, 10], [2, 0, 3, 2, 0, 3, -1, 1], [8, 5, 8, 3, 8], 8, 57, 43),
    # more slots than threads, uneven sizes that still pack evenly
    "many_small_slots": ([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], list(range(11)), [4] * 11, 4, 33, 21),
    # one slot holds most rows: the serial path with BLAS threads
    "one_dominant_slot": ([200, 10, 6], [0, 1, 2], [16, 16, 16], 16, 64, 48),
}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_slot_parallel_matches_formulas(case, dtype, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_all(CASES[case], dtype)
    finally:
        torch.set_num_threads(before)


def test_slot_parallel_under_autograd():
    """lora_apply through autograd with the parallel path: grads match the float64 loop."""
    from mint import ops

    g = torch.Generator().manual_seed(0)
    lens, k, r, din, dout = [30, 34, 29, 35], 4, 8, 40, 24
    t = sum(lens)
    x = torch.randn(t, din, generator=g, dtype=torch.float64).float().requires_grad_(True)
    y = torch.randn(t, dout, generator=g)
    a = (torch.randn(k, r, din, generator=g) / din**0.5).requires_grad_(True)
    b = (torch.randn(k, r, dout, generator=g) / r**0.5).requires_grad_(True)
    indptr = torch.tensor([0] + lens).cumsum(0)
    adapters = torch.arange(k)
    ranks = torch.full((k,), r)
    scales = torch.full((k,), 0.5)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = ops.lora_apply(y, x, a, b, indptr, adapters, ranks, scales)
        grads = torch.autograd.grad(out.square().sum(), (x, a, b))
    finally:
        torch.set_num_threads(before)
    xd, ad, bd = (v.detach().double().requires_grad_(True) for v in (x, a, b))
    ref = y.double().clone()
    for s in range(k):
        lo, hi = int(indptr[s]), int(indptr[s + 1])
        ref = ref.index_add(0, torch.arange(lo, hi), 0.5 * (xd[lo:hi] @ ad[s].T) @ bd[s])
    want = torch.autograd.grad(ref.square().sum(), (xd, ad, bd))
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    for got, w in zip(grads, want):
        torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-4)
