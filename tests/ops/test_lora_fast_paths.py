"""The write-in-place paths of the CPU LoRA kernels (csrc/cpu/lora.cpp).

Outputs that the plan covers completely are allocated uninitialised and written by the GEMMs
themselves (scale folded into alpha); gradient pools are zeroed only in the (slot, row) gaps the
plan does not write. These tests aim at those paths: full coverage (no zero fill), gaps at the
start / middle / end of the pool, ranks below R, gathered (non-adjacent) segments, non-contiguous
inputs and empty inner dimensions. Before each call the allocator is primed with freed NaN-filled
blocks of the output sizes, so an element the kernel forgot to write is very likely NaN, not 0.
The reference is a per-segment float32 loop written from the formulas (it never calls mint).
"""

from __future__ import annotations

import pytest
import torch

import mint  # noqa: F401  (loads the extension)

ops = torch.ops.mint
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (4e-2, 4e-2), torch.float16: (5e-3, 5e-3)}


def prime_with_nan(*shapes):
    """Allocates and frees NaN-filled float32 blocks so recycled memory is NaN, not zero."""
    blocks = [torch.full(s, float("nan")) for s in shapes for _ in range(3)]
    del blocks


def make(lens, adapters, ranks, R, din, dout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    T, N = sum(lens), len(ranks)
    f = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    x, y, h, gy, gh = f(T, din), f(T, dout), f(T, R), f(T, dout), f(T, R)
    a, b = (f(N, R, din) / max(din, 1) ** 0.5), (f(N, R, dout) / R**0.5)
    indptr = torch.tensor([0] + lens, dtype=torch.int64).cumsum(0)
    seg = torch.tensor(adapters, dtype=torch.int64)
    rk = torch.tensor(ranks, dtype=torch.int64)
    sc = torch.linspace(0.5, 2.0, N, dtype=torch.float32)
    return x, y, h, gy, gh, a, b, indptr, seg, rk, sc


def reference(x, y, h, gy, gh, a, b, indptr, seg, rk, sc):
    """(h_fwd, out, grad_h, grad_b, grad_x, grad_a) in float32 from the per-segment formulas."""
    f = lambda t: t.float()  # noqa: E731
    T, R = x.shape[0], a.shape[1]
    h_fwd, out = torch.zeros(T, R), f(y).clone()
    g_h, g_b, g_x, g_a = torch.zeros(T, R), torch.zeros(b.shape), torch.zeros(x.shape), torch.zeros(a.shape)
    for s in range(seg.numel()):
        lo, hi, n = int(indptr[s]), int(indptr[s + 1]), int(seg[s])
        if n < 0:
            continue
        r, k = int(rk[n]), float(sc[n])
        h_fwd[lo:hi, :r] = f(x[lo:hi]) @ f(a[n, :r]).T
        out[lo:hi] += k * f(h[lo:hi, :r]) @ f(b[n, :r])
        g_h[lo:hi, :r] = k * f(gy[lo:hi]) @ f(b[n, :r]).T
        g_b[n, :r] += k * f(h[lo:hi, :r]).T @ f(gy[lo:hi])
        g_x[lo:hi] = f(gh[lo:hi, :r]) @ f(a[n, :r])
        g_a[n, :r] += f(gh[lo:hi, :r]).T @ f(x[lo:hi])
    return h_fwd, out, g_h, g_b, g_x, g_a


def check_all(case, dtype, transform=lambda t: t):
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make(*case, dtype)
    want = reference(x, y, h, gy, gh, a, b, indptr, seg, rk, sc)
    # the elements that must be exactly 0 (ranks past a slot's, unused slots, rows of -1 segments): 0 even
    # with every input positive, where no sum can cancel to 0 by chance
    structural_zero = [w == 0 for w in reference(*(t.abs() for t in (x, y, h, gy, gh, a, b)), indptr, seg, rk, sc)]
    x, y, h, gy, gh = (transform(t) for t in (x, y, h, gy, gh))
    prime_with_nan(h.shape, y.shape, x.shape, a.shape, b.shape)
    got = [ops.lora_shrink(x, a, indptr, seg, rk), ops.lora_expand(y, h, b, indptr, seg, rk, sc)]
    prime_with_nan(h.shape, b.shape)
    got += list(ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc))
    prime_with_nan(x.shape, a.shape)
    got += list(ops.lora_shrink_backward(gh, x, a, indptr, seg, rk))
    rtol, atol = TOL[dtype]
    names = ["h", "out", "grad_h", "grad_b", "grad_x", "grad_a"]
    for name, g, w, zero in zip(names, got, want, structural_zero):
        assert g.dtype == dtype and g.shape == w.shape, name
        assert not g.float().isnan().any(), f"{name} has unwritten (NaN) elements"
        scale = max(w.abs().max().item(), 1.0) if w.numel() else 1.0
        torch.testing.assert_close(g.float(), w, rtol=rtol, atol=atol * scale, msg=name)
        assert not (g.float()[zero] != 0).any() or name == "out", f"{name}: nonzero where 0 expected"
    again = [ops.lora_shrink(x, a, indptr, seg, rk), *ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc),
             *ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)]
    for first, second in zip([got[0], *got[2:]], again):
        assert torch.equal(first, second)  # deterministic


# (segment lengths, slot per segment, rank per slot, R, in, out)
FAST_CASES = {
    # every row and every column written: outputs are never zero-filled
    "one_slot_full_rank": ([37], [0], [16], 16, 65, 33),
    "two_slots_full_rank_interleaved": ([5, 7, 3, 9], [1, 0, 1, 0], [8, 8], 8, 31, 17),
    # pool gaps: unused slot first, rank < R in the middle, unused run, rank < R last
    "pool_gaps": ([4, 6, 5], [1, 4, 2], [3, 5, 8, 2, 6], 8, 23, 29),
    "gap_only_unused_slots_at_end": ([6], [0], [8, 8, 8], 8, 12, 10),
    "gap_only_low_rank_rows": ([3, 4], [0, 1], [8, 3], 8, 12, 10),
    "all_minus1_pool_all_zero": ([5], [-1], [4, 4], 4, 9, 7),
    "rank0_slot_rows_zero": ([4, 4], [1, 0], [8, 0], 8, 11, 13),
    # rows no slot writes (-1 segments, a rank-0 slot) at the start, between and after written ones: the
    # out-of-place expand copies exactly those rows of y and writes the others once
    "uncovered_rows_between": ([2, 3, 4, 5, 2, 6, 1], [2, 0, -1, 1, 2, 0, -1], [4, 6, 0], 6, 19, 23),
    "odd_sizes_tails": ([129, 3], [0, 1], [17, 5], 17, 1031, 257),
    "empty_in_dim": ([3, 2], [0, 1], [4, 2], 4, 0, 5),
    "empty_out_dim": ([3, 2], [0, 1], [4, 2], 4, 6, 0),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(FAST_CASES))
def test_fast_paths_match_formulas(case, dtype):
    check_all(FAST_CASES[case], dtype)


@pytest.mark.parametrize("case", ["one_slot_full_rank", "pool_gaps", "two_slots_full_rank_interleaved"])
def test_fast_paths_non_contiguous_inputs(case):
    """Transposed-storage x, y, h and upstream grads go through the same write-in-place paths."""
    check_all(FAST_CASES[case], torch.float32, transform=lambda t: t.T.contiguous().T)


@pytest.mark.parametrize("threads", [1, 2])
def test_fast_paths_thread_counts(threads):
    """Same results (to tolerance) and bit-identical repeats with 1 and 2 intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_all(([64, 192], [0, 1], [16, 16], 16, 576, 1536), torch.float32)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("gathered", [False, True], ids=["contiguous", "gathered"])
def test_reduced_precision_accumulates_in_fp32(dtype, gathered):
    """Long reductions (in = 4096 for h and grad_x... rows = 1500 for grad_a, grad_b) round once.

    bf16 runs bf16 GEMMs and fp16 fp32 copies; either way every output must be the float32 result
    rounded to the dtype (half an ulp, plus float32 reordering noise), which a reduced-precision
    accumulator over thousands of terms would miss by far."""
    lens, adapters = ([700, 800], [0, 1]) if not gathered else ([400, 350, 400, 350], [0, 1, 0, 1])
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make(lens, adapters, [16, 16], 16, 4096, 96, dtype)
    want = reference(x, y, h, gy, gh, a, b, indptr, seg, rk, sc)
    got = [ops.lora_shrink(x, a, indptr, seg, rk), ops.lora_expand(y, h, b, indptr, seg, rk, sc),
           *ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc), *ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)]
    half_ulp = 2.0 ** -(8 if dtype == torch.bfloat16 else 11)
    for name, g, w in zip(["h", "out", "grad_h", "grad_b", "grad_x", "grad_a"], got, want):
        err = (g.float() - w).abs()
        allowed = w.abs() * half_ulp * 1.01 + 1e-5 * w.abs().max()
        assert (err <= allowed).all(), f"{name}: max error {err.max().item():.3g} beyond one rounding"
