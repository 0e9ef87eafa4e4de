"""The register-blocked row kernels behind the CPU LoRA ops (csrc/cpu/lora_tiles.cpp).

Every op's row side (h = x A^T, y + s h B, grad_h = s grad_y B^T, grad_x = grad_h A) runs in blocks of
up to 16 rows of one slot: dots 6 (AVX-512) or 2 (AVX2) rows x 4 columns at a time, expands 6 or 4 rows x
4 or 2 output vectors (then the 1-5 remaining rows in one block), with masked vector tails, column chunks
when there are few row blocks or a slot's weights overflow L2, ranges of k for large dot weights, and
several passes for ranks over 256. These cases sit on and around each of those boundaries; the reference is the float32
per-segment formulas of tests/ops/test_lora_fast_paths.py (NaN-primed outputs). Bit-level checks: a
row's result does not depend on the other rows in the call (batch invariance), on where a block
boundary falls, or on the thread count.
"""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_lora_fast_paths import check_all, make

ops = torch.ops.mint

# (segment lengths, slot per segment, rank per slot, R, in, out)
TILE_CASES = {
    # rows per slot around the register blocks and the 16-row work block
    "rows_1_3_4_5": ([1, 3, 4, 5], [0, 1, 2, 3], [16] * 4, 16, 48, 64),
    # around the 6-row expand block: 2, 6, 7, 11, 12, 13 rows
    "rows_2_6_7_11_12_13": ([2, 6, 7, 11, 12, 13], [0, 1, 2, 3, 0, 1], [16] * 4, 16, 40, 70),
    "rows_15_16_17_33": ([15, 16, 17, 33], [0, 1, 2, 3], [8] * 4, 8, 32, 32),
    # k (in) around the vector width: 1, 15, 17 and a long masked tail
    "k_1": ([6, 5], [0, 1], [4, 4], 4, 1, 20),
    "k_15": ([6, 5], [0, 1], [4, 4], 4, 15, 20),
    "k_17": ([6, 5], [0, 1], [4, 4], 4, 17, 20),
    "k_100": ([9, 7], [0, 1], [8, 8], 8, 100, 20),
    # output columns around one vector and the 4-vector block (64 floats with AVX-512)
    "out_1": ([7, 6], [0, 1], [4, 4], 4, 24, 1),
    "out_15": ([7, 6], [0, 1], [4, 4], 4, 24, 15),
    "out_63_rank_3": ([7, 6], [0, 1], [3, 3], 4, 24, 63),
    "out_65_rank_5": ([7, 6], [0, 1], [5, 5], 5, 24, 65),
    "out_130_rank_7": ([9, 4], [1, 0], [7, 6], 7, 40, 130),
    # ranks that are not a multiple of the 4 dot columns, and beyond one 256-rank pass of the expand
    "ranks_1_2_6_9": ([5, 5, 5, 5], [0, 1, 2, 3], [1, 2, 6, 9], 9, 37, 41),
    "rank_300": ([5, 6], [0, 1], [300, 257], 300, 40, 36),
    # ranks at and around multiples of the vector width with row counts around the register blocks
    "ranks_17_32_33_64": ([5, 13, 7, 16], [0, 1, 2, 3], [17, 32, 33, 64], 64, 45, 30),
    "rank_48_row_tails": ([6, 8, 9, 14, 1, 23], [0, 1, 0, 1, 2, 2], [48, 40, 20], 48, 31, 20),
    # one slot, few rows, wide output: the output columns are split into chunks across threads
    "one_block_wide": ([3], [0], [16], 16, 64, 1000),
    # wide outputs with few row blocks (split into column chunks across threads), ending in a partial vector
    "wide_rank_64_column_chunks": ([9, 21], [0, 1], [64, 60], 64, 40, 1100),
    "wide_rank_16_column_chunks": ([5, 18], [0, 1], [16, 16], 16, 24, 4200),
    # a slot whose src rows span >= 8 MB (fp32: 1100 rows x 2000 columns): its weight gradients read a
    # contiguous copy of each column chunk
    "weight_grads_long_slot": ([1100, 40], [0, 1], [16, 8], 16, 70, 2000),
    # a slot's weights over 512 KB (rank 64 x 2100 fp32 for grad_x, x 4200 for the expand, both dtypes):
    # expand passes run slot-major, groups of up to 16 blocks (300 rows: 16 + 3 blocks) x column chunks
    "slot_major_expand": ([300, 21, 9], [0, 1, 0], [64, 40], 64, 2100, 4200),
    # dot weights over 512 KB (fp32 / fp16: rank 48 x 2900 for the shrink, x 3000 for grad_h): k is swept in
    # ranges of ~256 KB of weights (1344 / 2688 of k here) with carried partial sums, ending in a masked tail
    "dot_k_ranges": ([7, 18, 5], [0, 1, 0], [48, 33], 48, 2900, 3000),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(TILE_CASES))
def test_tiles_match_formulas(case, dtype):
    check_all(TILE_CASES[case], dtype)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", ["rows_15_16_17_33", "one_block_wide", "rank_300", "slot_major_expand",
                                  "dot_k_ranges"])
def test_tiles_thread_counts(case, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_all(TILE_CASES[case], torch.float32)
    finally:
        torch.set_num_threads(before)


def run_ops(x, y, h, gy, gh, a, b, indptr, seg, rk, sc):
    return [ops.lora_shrink(x, a, indptr, seg, rk), ops.lora_expand(y, h, b, indptr, seg, rk, sc),
            ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc)[0],
            ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)[0]]


@pytest.mark.parametrize("rank, d_in, d_out", [(16, 70, 90), (48, 70, 90), (64, 2100, 4200), (48, 2900, 3000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_row_results_do_not_depend_on_the_batch(dtype, rank, d_in, d_out):
    """Each row computed alone, as one of 37 rows of its slot, and behind other slots' rows: same bits (the
    last two shapes run their expand passes slot-major and their dots over ranges of k)."""
    case = ([37, 11], [0, 1], [rank, rank], rank, d_in, d_out)
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make(*case, dtype)
    batched = run_ops(x, y, h, gy, gh, a, b, indptr, seg, rk, sc)
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for t in (0, 3, 4, 16, 17, 36, 37, 47):
                n = 0 if t < 37 else 1
                one = run_ops(x[t:t + 1], y[t:t + 1], h[t:t + 1], gy[t:t + 1], gh[t:t + 1], a, b,
                              torch.tensor([0, 1]), torch.tensor([n]), rk, sc)
                for name, full, single in zip(["h", "out", "grad_h", "grad_x"], batched, one):
                    assert torch.equal(full[t:t + 1], single), f"{name} row {t} at {threads} threads"
        finally:
            torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_expand_inplace_on_strided_rows(dtype):
    """lora_expand_ on a y whose columns are not adjacent (a transposed view) writes the same values."""
    x, y, h, gy, gh, a, b, indptr, seg, rk, sc = make([6, 7], [1, 0], [8, 8], 8, 20, 33, dtype)
    want = ops.lora_expand(y, h, b, indptr, seg, rk, sc)
    yt = y.t().contiguous().t()  # same values, column stride T
    assert yt.stride(1) != 1
    ops.lora_expand_(yt, h, b, indptr, seg, rk, sc)
    assert torch.equal(yt, want)


@pytest.mark.parametrize("dtype, k", [(torch.float32, 2900), (torch.float16, 6000)], ids=str)
def test_dot_k_ranges_give_the_one_pass_bits(dtype, k):
    """A shrink whose weights are swept in ranges of k (rank 48: 557 / 576 KB) equals, bit for bit, the same
    rows computed from a narrower weight that fits in one pass: the carried partial sums change nothing."""
    torch.manual_seed(0)
    x = torch.randn(21, k).to(dtype)
    a = (torch.randn(1, 48, k) / k**0.5).to(dtype)
    indptr, seg, rk = torch.tensor([0, 21]), torch.tensor([0]), torch.tensor([48])
    h = ops.lora_shrink(x, a, indptr, seg, rk)
    # each rank's column depends only on its own weight row: 8 ranks at a time fit in one pass
    for r0 in range(0, 48, 8):
        part = ops.lora_shrink(x, a[:, r0:r0 + 8].contiguous(), indptr, seg, torch.tensor([8]))
        assert torch.equal(h[:, r0:r0 + 8], part)


@pytest.mark.parametrize("dtype, k, tail", [(torch.float32, 2900, 500), (torch.float16, 6000, 1008)], ids=str)
def test_dot_k_ranges_carry_one_chain(dtype, k, tail):
    """The same shrink with x zero before its last `tail` elements equals, bit for bit, one pass over those
    elements alone: zero products add exact zeros, and the tail starts at a multiple of the vector width
    (lanes line up) and crosses a range boundary (fp32 at 2720, fp16 at 5440), so the carried partial
    sums must continue one chain per lane, not sum the ranges' results."""
    torch.manual_seed(1)
    x = torch.randn(21, k).to(dtype)
    x[:, :k - tail] = 0
    a = (torch.randn(1, 48, k) / tail**0.5).to(dtype)
    indptr, seg, rk = torch.tensor([0, 21]), torch.tensor([0]), torch.tensor([48])
    h = ops.lora_shrink(x, a, indptr, seg, rk)
    one_pass = ops.lora_shrink(x[:, k - tail:].contiguous(), a[:, :, k - tail:].contiguous(), indptr, seg, rk)
    assert torch.equal(h, one_pass)
    want = (x.double() @ a[0].double().T).to(dtype)
    torch.testing.assert_close(h, want, rtol=2e-3 if dtype == torch.float16 else 1e-5, atol=1e-3)
