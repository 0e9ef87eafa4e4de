"""The fused CPU passes behind lora_apply (torch.ops.mint.lora_apply_forward / _ / lora_apply_backward).

On CPU, lora_apply's forward runs shrink and expand in one pass over row blocks and its backward computes
grad_h and grad_x in one pass and dA, dB in another. They must give the same bits as the separate ops
(shrink -> expand, expand_backward -> shrink_backward) in both arrangements the passes choose between
(enough row blocks for one fused pass, or too few: two passes), for every dtype, with -1 segments,
gathered slots, rank-0 slots and ranks below R; inputs are checked and name the argument; the in-place
forward bumps y's version counter and refuses inputs that require grad.
"""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_lora_fast_paths import make

ops = torch.ops.mint

# (segment lengths, slot per segment, rank per slot, R, in, out)
CASES = {
    # 12 row blocks of 16: at 1-2 threads every block is one work item (the fused single pass)
    "many_blocks": ([64, 40, 37, 50], [0, 1, 0, 2], [16, 8, 16], 16, 70, 90),
    # two blocks: too few for whole-row items, the two-pass arrangement
    "few_blocks": ([9, 7], [1, 0], [8, 5], 8, 33, 130),
    # -1 segments and a rank-0 slot among many blocks: uncovered rows copied / zero
    "uncovered_rows": ([40, 20, 33, 30, 18], [0, -1, 2, 1, -1], [16, 4, 0], 16, 48, 40),
    "rank_300": ([70, 60], [0, 1], [300, 257], 300, 40, 36),
}


def separate(x, y, h_in, gy, a, b, indptr, seg, rk, sc):
    h = ops.lora_shrink(x, a, indptr, seg, rk)
    out = ops.lora_expand(y, h, b, indptr, seg, rk, sc)
    gh, gb = ops.lora_expand_backward(gy, h_in, b, indptr, seg, rk, sc)
    gx, ga = ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)
    return out, h, gx, ga, gb


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_fused_equals_separate_ops(case, dtype, threads):
    x, y, h0, gy, _, a, b, indptr, seg, rk, sc = make(*CASES[case], dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        h_in = ops.lora_shrink(x, a, indptr, seg, rk)
        want = separate(x, y, h_in, gy, a, b, indptr, seg, rk, sc)
        out, h = ops.lora_apply_forward(y, x, a, b, indptr, seg, rk, sc)
        y2 = y.clone()
        h2 = ops.lora_apply_forward_(y2, x, a, b, indptr, seg, rk, sc)
        gx, ga, gb = ops.lora_apply_backward(gy, x, h_in, a, b, indptr, seg, rk, sc)
    finally:
        torch.set_num_threads(before)
    for name, got, w in zip(["out", "h", "grad_x", "grad_a", "grad_b"], [out, h, gx, ga, gb], want):
        assert torch.equal(got, w), name
    assert torch.equal(y2, want[0]) and torch.equal(h2, want[1])


def test_fused_inplace_strided_y_and_version_counter():
    x, y, _, _, _, a, b, indptr, seg, rk, sc = make([20, 30], [0, 1], [8, 8], 8, 24, 33, torch.float32)
    want, _ = ops.lora_apply_forward(y, x, a, b, indptr, seg, rk, sc)
    yt = y.t().contiguous().t()  # column stride T
    v = yt._version
    ops.lora_apply_forward_(yt, x, a, b, indptr, seg, rk, sc)
    assert torch.equal(yt, want) and yt._version > v
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.lora_apply_forward_(y.clone(), x.clone().requires_grad_(), a, b, indptr, seg, rk, sc)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: {**t, "y": t["y"][:, :-1]}, "lora_b must be"),
        (lambda t: {**t, "y": t["y"][:-1]}, "y must have T"),
        (lambda t: {**t, "b": t["b"][:1]}, "lora_a and lora_b must share"),
        (lambda t: {**t, "a": t["a"].double()}, "lora_a must"),
        (lambda t: {**t, "sc": t["sc"][:1]}, "lora_scales must have"),
        (lambda t: {**t, "seg": torch.tensor([0, 5])}, r"seg_adapter\[1\]"),
    ],
)
def test_fused_forward_names_the_argument(change, match):
    x, y, _, _, _, a, b, indptr, seg, rk, sc = make([3, 4], [0, 1], [4, 4], 4, 9, 7, torch.float32)
    t = change({"y": y, "x": x, "a": a, "b": b, "indptr": indptr, "seg": seg, "rk": rk, "sc": sc})
    with pytest.raises(RuntimeError, match=match):
        ops.lora_apply_forward(t["y"], t["x"], t["a"], t["b"], t["indptr"], t["seg"], t["rk"], t["sc"])


def test_fused_backward_names_the_argument():
    x, y, h, gy, _, a, b, indptr, seg, rk, sc = make([3, 4], [0, 1], [4, 4], 4, 9, 7, torch.float32)
    with pytest.raises(RuntimeError, match="h must be"):
        ops.lora_apply_backward(gy, x, h[:, :2], a, b, indptr, seg, rk, sc)
    with pytest.raises(RuntimeError, match="grad_out must have T"):
        ops.lora_apply_backward(gy[:2], x, h, a, b, indptr, seg, rk, sc)


def test_fused_opcheck():
    x, y, h, gy, _, a, b, indptr, seg, rk, sc = make([5, 0, 6], [1, -1, 0], [4, 3], 4, 11, 9, torch.float32)
    torch.library.opcheck(ops.lora_apply_forward, (y, x, a, b, indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_apply_forward_, (y.clone(), x, a, b, indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_apply_backward, (gy, x, h, a, b, indptr, seg, rk, sc))
