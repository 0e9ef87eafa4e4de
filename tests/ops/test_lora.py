"""Tests of the segmented multi-adapter LoRA ops (torch.ops.mint.lora_*) and their Python wrappers.

The reference is a plain per-segment PyTorch loop in float32 (autograd through it gives the
reference gradients); it never calls mint. Inputs of a low-precision dtype are rounded to that
dtype first and the reference runs on the rounded values upcast to float32, so the tolerances only
cover the kernel's own roundings (h stored in the input dtype between shrink and expand, outputs
rounded once), not the input quantisation.

Data is scaled so every compared value is O(1): x ~ N(0, 1), A ~ N(0, 1/in), B ~ N(0, 1/R).
Tolerances, as |actual - expected| <= atol + rtol * |expected| (torch.testing.assert_close):

    dtype      rtol    atol    why
    float32    2e-5    2e-5    MKL vs reference summation order over up to 3424 terms
    bfloat16   4e-2    4e-2    8-bit mantissa: h and the output are each rounded once (2 * 2^-8 + sums)
    float16    5e-3    5e-3    11-bit mantissa, same two roundings

Gradients use the same table with atol scaled by the largest reference magnitude of that gradient
(dA and dB sum over tokens, so they grow like sqrt(T)). Exact (bit) checks: rows of -1 segments
equal y, their dx rows and the gradients of unused slots are exactly 0, dy equals the upstream
gradient, and two identical runs give identical bits.
"""

from __future__ import annotations

import pytest
import torch

import mint  # noqa: F401  (loads the extension)
from mint.ops.lora import (
    lora_apply,
    lora_apply_,
    lora_apply_by_token,
    lora_expand,
    lora_expand_,
    lora_shrink,
    segments_from_adapter_ids,
)

ops = torch.ops.mint
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (4e-2, 4e-2), torch.float16: (5e-3, 5e-3)}

# name -> segment lengths, slot per segment, rank per slot, R, in, out
CASES = {
    "minus1_mid": ([3, 4, 5], [0, -1, 1], [4, 8], 8, 33, 17),
    "all_minus1": ([3, 2], [-1, -1], [4, 4], 4, 16, 24),
    "empty_start_mid_end": ([0, 3, 0, 4, 0], [1, 0, 2, 1, 0], [4, 4, 4], 4, 19, 21),
    "same_adapter_nonadjacent": ([2, 3, 4, 1], [1, 0, 1, -1], [6, 3], 8, 20, 12),
    "last_slot": ([3, 2], [3, 0], [2, 4, 4, 5], 5, 9, 11),
    "skew_1_rest": ([1, 10], [0, 1], [4, 4], 4, 18, 14),
    "skew_rest_1": ([10, 1], [0, 1], [4, 4], 4, 18, 14),
    "single_token": ([1], [0], [3], 4, 10, 6),
    "t0_no_segments": ([], [], [2], 4, 8, 8),
    "t0_empty_segments": ([0, 0], [0, -1], [2], 4, 8, 8),
    "rank1": ([3, 2], [0, 1], [1, 1], 1, 15, 9),
    "rank64": ([5, 3], [1, 0], [64, 64], 64, 70, 40),
    "ranks_4_and_64": ([4, 5, 2], [0, 1, 0], [4, 64], 64, 96, 80),
    "rank0_slot": ([3, 3], [0, 1], [0, 4], 4, 12, 10),
    "odd_2049_3424": ([3, 4], [1, 0], [8, 16], 16, 2049, 3424),
    "smollm_576_1536": ([5, 4, 3], [0, 2, 1], [16, 8, 16], 16, 576, 1536),
}
SMALL_CASES = [k for k in CASES if not k.startswith(("odd_", "smollm_"))]


def make(case, dtype, seed=0):
    """Inputs of a case: float tensors in `dtype` plus the int64 / float32 index tensors."""
    lens, adapters, ranks, R, din, dout = CASES[case] if isinstance(case, str) else case
    g = torch.Generator().manual_seed(seed)
    T, N = sum(lens), len(ranks)
    x = torch.randn(T, din, generator=g).to(dtype)
    y = torch.randn(T, dout, generator=g).to(dtype)
    a = (torch.randn(N, R, din, generator=g) / din**0.5).to(dtype)
    b = (torch.randn(N, R, dout, generator=g) / R**0.5).to(dtype)
    indptr = torch.tensor([0] + lens, dtype=torch.int64).cumsum(0)
    seg = torch.tensor(adapters, dtype=torch.int64)
    rk = torch.tensor(ranks, dtype=torch.int64)
    sc = torch.linspace(0.5, 2.0, N, dtype=torch.float32) if N > 1 else torch.ones(N)
    return x, y, a, b, indptr, seg, rk, sc


# ---- independent reference --------------------------------------------------------------------


def ref_apply(y, x, a, b, indptr, seg, rk, sc):
    """Per-segment loop in float32; differentiable through plain torch ops."""
    rows = []
    for s in range(seg.numel()):
        lo, hi, n = int(indptr[s]), int(indptr[s + 1]), int(seg[s])
        if n < 0:
            rows.append(y[lo:hi])
            continue
        r = int(rk[n])
        h = x[lo:hi] @ a[n, :r].T
        rows.append(y[lo:hi] + float(sc[n]) * (h @ b[n, :r]))
    return torch.cat(rows) if rows else y * 1


def ref_shrink(x, a, indptr, seg, rk):
    h = torch.zeros(x.shape[0], a.shape[1])
    for s in range(seg.numel()):
        lo, hi, n = int(indptr[s]), int(indptr[s + 1]), int(seg[s])
        if n >= 0:
            r = int(rk[n])
            h[lo:hi, :r] = x[lo:hi] @ a[n, :r].T
    return h


def used_rows(indptr, seg, rk=None):
    """Rows of segments with an adapter (of rank > 0 when `rk` is given)."""
    mask = torch.zeros(int(indptr[-1]), dtype=torch.bool)
    for s in range(seg.numel()):
        n = int(seg[s])
        if n >= 0 and (rk is None or int(rk[n]) > 0):
            mask[int(indptr[s]) : int(indptr[s + 1])] = True
    return mask


def used_slots(indptr, seg, n_slots):
    used = torch.zeros(n_slots, dtype=torch.bool)
    for s in range(seg.numel()):
        if int(seg[s]) >= 0 and int(indptr[s + 1]) > int(indptr[s]):
            used[int(seg[s])] = True
    return used


def close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol * max(scale, 1.0))


# ---- forward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_reference(case, dtype):
    x, y, a, b, indptr, seg, rk, sc = make(case, dtype)
    f = [t.float() for t in (y, x, a, b)]

    h = lora_shrink(x, a, indptr, seg, rk)
    assert h.dtype == dtype and h.shape == (x.shape[0], a.shape[1])
    close(h, ref_shrink(f[1], f[2], indptr, seg, rk), dtype)

    out = lora_apply(y, x, a, b, indptr, seg, rk, sc)
    assert out.dtype == dtype and out.shape == y.shape
    close(out, ref_apply(*f, indptr, seg, rk, sc), dtype)

    # rows without an adapter (or with a rank-0 one) are bit-identical copies of y; h is exactly 0
    keep = ~used_rows(indptr, seg, rk)
    assert torch.equal(out[keep], y[keep])
    assert torch.equal(h[keep], torch.zeros_like(h[keep]))
    for s in range(seg.numel()):  # columns >= rank are exactly 0
        n = int(seg[s])
        if n >= 0:
            assert not h[int(indptr[s]) : int(indptr[s + 1]), int(rk[n]) :].any()


def test_all_minus1_leaves_y_bit_unchanged():
    x, y, a, b, indptr, seg, rk, sc = make("all_minus1", torch.bfloat16)
    y0 = y.clone()
    assert torch.equal(lora_apply(y, x, a, b, indptr, seg, rk, sc), y0)
    lora_expand_(y, lora_shrink(x, a, indptr, seg, rk), b, indptr, seg, rk, sc)
    assert torch.equal(y, y0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs(dtype):
    x, y, a, b, indptr, seg, rk, sc = make("same_adapter_nonadjacent", dtype)
    wide = torch.randn(x.shape[0], x.shape[1] + 7).to(dtype)
    wide[:, 3 : 3 + x.shape[1]] = x
    xs = wide[:, 3 : 3 + x.shape[1]]  # column slice: row stride != in
    yt = y.T.contiguous().T  # column-major y
    assert not xs.is_contiguous() and not yt.is_contiguous()
    a_nc = a.transpose(1, 2).contiguous().transpose(1, 2)
    expected = ref_apply(y.float(), x.float(), a.float(), b.float(), indptr, seg, rk, sc)
    close(lora_apply(yt, xs, a_nc, b, indptr, seg, rk, sc), expected, dtype)
    h = lora_shrink(xs, a, indptr, seg, rk)
    h_wide = torch.zeros(h.shape[0], h.shape[1] + 3, dtype=dtype)
    h_wide[:, 1:-2] = h
    close(lora_expand(yt, h_wide[:, 1:-2], b, indptr, seg, rk, sc), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_expand_inplace(dtype):
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", dtype)
    h = lora_shrink(x, a, indptr, seg, rk)
    expected = lora_expand(y, h, b, indptr, seg, rk, sc)
    yc = y.clone()
    ret = lora_expand_(yc, h, b, indptr, seg, rk, sc)
    assert ret is yc and torch.equal(yc, expected)
    yt = torch.zeros(y.shape[1], y.shape[0], dtype=dtype).T  # non-contiguous destination
    yt.copy_(y)
    lora_expand_(yt, h, b, indptr, seg, rk, sc)
    close(yt, expected, dtype)  # GEMM into a column-major block may round differently
    keep = ~used_rows(indptr, seg)
    assert torch.equal(yt[keep], y[keep])


def test_expand_inplace_and_autograd():
    """lora_expand_ bumps y's version (stale saved tensors are caught) and refuses grad-requiring inputs."""
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    h = lora_shrink(x, a, indptr, seg, rk)
    w = torch.randn(y.shape, requires_grad=True)
    saved = w.exp()  # exp saves its output for backward
    version = saved._version
    lora_expand_(saved.detach(), h, b, indptr, seg, rk, sc)
    assert saved._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.sum().backward()
    with pytest.raises(RuntimeError, match="not differentiable"):
        lora_expand_(y.clone(), h, b.clone().requires_grad_(), indptr, seg, rk, sc)
    with torch.no_grad():
        lora_expand_(y.clone().requires_grad_(), h, b, indptr, seg, rk, sc)
    with torch.inference_mode():
        lora_expand_(y.clone(), h, b, indptr, seg, rk, sc)


def test_double_backward_is_an_error():
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    x, b = x.requires_grad_(), b.requires_grad_()
    (gx,) = torch.autograd.grad(lora_apply(y, x, a, b, indptr, seg, rk, sc).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        gx.sum().backward()


def test_leading_dims():
    _, _, a, b, _, seg, rk, sc = make("skew_1_rest", torch.float32)
    x, y = torch.randn(2, 6, a.shape[2]), torch.randn(2, 6, b.shape[2])
    indptr = torch.tensor([0, 5, 12])  # segments span the flattened [2 * 6] tokens
    out = lora_apply(y, x, a, b, indptr, seg, rk, sc)
    assert out.shape == y.shape
    expected = ref_apply(y.reshape(12, -1), x.reshape(12, -1), a, b, indptr, seg, rk, sc)
    close(out.reshape(12, -1), expected, torch.float32)


# ---- errors -----------------------------------------------------------------------------------


def _bad(match, **change):
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    args = dict(x=x, y=y, a=a, b=b, indptr=indptr, seg=seg, rk=rk, sc=sc)
    args.update(change)
    h = torch.zeros(args["x"].shape[0], args["a"].shape[1])
    calls = [
        lambda: ops.lora_shrink(args["x"], args["a"], args["indptr"], args["seg"], args["rk"]),
        lambda: ops.lora_expand(args["y"], h, args["b"], args["indptr"], args["seg"], args["rk"], args["sc"]),
        lambda: ops.lora_expand_backward(
            args["y"], h, args["b"], args["indptr"], args["seg"], args["rk"], args["sc"]
        ),
        lambda: ops.lora_shrink_backward(h, args["x"], args["a"], args["indptr"], args["seg"], args["rk"]),
    ]
    return calls, match


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(seg=torch.tensor([0, -1, 2])), "seg_adapter"),  # slot == N
        (dict(seg=torch.tensor([0, -2, 1])), "seg_adapter"),
        (dict(indptr=torch.tensor([0, 5, 3, 12])), "seg_indptr"),  # decreasing
        (dict(indptr=torch.tensor([0, 3, 7, 11])), "seg_indptr"),  # last != T
        (dict(indptr=torch.tensor([1, 3, 7, 12])), "seg_indptr"),  # first != 0
        (dict(indptr=torch.tensor([0, 3, 7, 12], dtype=torch.int32)), "seg_indptr"),
        (dict(seg=torch.tensor([0, -1])), "seg_adapter"),  # wrong S
        (dict(rk=torch.tensor([4, 9])), "lora_ranks"),  # > R
        (dict(rk=torch.tensor([4, -1])), "lora_ranks"),
        (dict(rk=torch.tensor([4, 4, 4])), "lora_ranks"),  # wrong N
    ],
)
def test_bad_indices_name_the_argument(change, match):
    calls, match = _bad(match, **change)
    for call in calls:
        with pytest.raises(RuntimeError, match=match):
            call()


def test_bad_tensors_name_the_argument():
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    h = lora_shrink(x, a, indptr, seg, rk)
    with pytest.raises(RuntimeError, match="lora_a"):
        ops.lora_shrink(x, a.half(), indptr, seg, rk)
    with pytest.raises(RuntimeError, match="lora_a"):
        ops.lora_shrink(x, a[:, :, :-1], indptr, seg, rk)
    with pytest.raises(RuntimeError, match="x"):
        ops.lora_shrink(x.double(), a, indptr, seg, rk)
    with pytest.raises(RuntimeError, match="lora_b"):
        ops.lora_expand(y, h, b.bfloat16(), indptr, seg, rk, sc)
    with pytest.raises(RuntimeError, match="h"):
        ops.lora_expand(y, h[:-1], b, indptr, seg, rk, sc)
    with pytest.raises(RuntimeError, match="lora_scales"):
        ops.lora_expand(y, h, b, indptr, seg, rk, sc.double())
    with pytest.raises(RuntimeError, match="lora_scales"):
        ops.lora_expand(y, h, b, indptr, seg, rk, sc[:1])
    with pytest.raises(RuntimeError, match="grad_h"):
        ops.lora_shrink_backward(h.half(), x, a, indptr, seg, rk)
    with pytest.raises(ValueError, match="adapter_ids"):
        segments_from_adapter_ids(torch.tensor([0, 1], dtype=torch.int32))


# ---- backward ---------------------------------------------------------------------------------


def _grads(fn, y, x, a, b, g, unused_is_zero=False):
    """Gradients wrt (y, x, a, b) of <fn(y, x, a, b), g>; the reference may leave unused ones None."""
    leaves = [t.detach().clone().requires_grad_() for t in (y, x, a, b)]
    fn(*leaves).backward(g)
    if unused_is_zero:
        return [torch.zeros_like(t) if t.grad is None else t.grad for t in leaves]
    return [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_backward_matches_reference(case, dtype):
    x, y, a, b, indptr, seg, rk, sc = make(case, dtype)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    idx = (indptr, seg, rk, sc)
    got = _grads(lambda *t: lora_apply(*t, *idx), y, x, a, b, g)
    want = _grads(
        lambda *t: ref_apply(*t, *idx), y.float(), x.float(), a.float(), b.float(), g.float(), True
    )
    for name, gv, wv in zip(["dy", "dx", "dA", "dB"], got, want):
        assert gv.dtype == dtype, name
        close(gv, wv, dtype, scale=wv.abs().max().item() if wv.numel() else 1.0)
    assert torch.equal(got[0], g)  # dy is the upstream gradient
    keep = ~used_rows(indptr, seg)
    assert not got[1][keep].any()  # -1 rows give no dx
    unused = ~used_slots(indptr, seg, a.shape[0])
    assert not got[2][unused].any() and not got[3][unused].any()
    for n in range(a.shape[0]):  # rows >= rank of every slot get no gradient
        assert not got[2][n, int(rk[n]) :].any() and not got[3][n, int(rk[n]) :].any()

    again = _grads(lambda *t: lora_apply(*t, *idx), y, x, a, b, g)
    for first, second in zip(got, again):
        assert torch.equal(first, second)  # bit-identical across runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_ops_directly(dtype):
    """The backward ops on arbitrary (non-contiguous) upstream grads, against the formulas."""
    x, y, a, b, indptr, seg, rk, sc = make("same_adapter_nonadjacent", dtype)
    gen = torch.Generator().manual_seed(3)
    gy = torch.randn(y.shape[1], y.shape[0], generator=gen).to(dtype).T
    gh = torch.randn(x.shape[0], a.shape[1], generator=gen).to(dtype)  # garbage in columns >= rank too
    h = torch.randn(x.shape[0], a.shape[1], generator=gen).to(dtype)

    grad_h, grad_b = ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc)
    grad_x, grad_a = ops.lora_shrink_backward(gh, x, a, indptr, seg, rk)
    want_gh, want_gb = torch.zeros(h.shape), torch.zeros(b.shape)
    want_gx, want_ga = torch.zeros(x.shape), torch.zeros(a.shape)
    f = lambda t: t.float()  # noqa: E731
    for s in range(seg.numel()):
        lo, hi, n = int(indptr[s]), int(indptr[s + 1]), int(seg[s])
        if n < 0:
            continue
        r, k = int(rk[n]), float(sc[n])
        want_gh[lo:hi, :r] = k * f(gy[lo:hi]) @ f(b[n, :r]).T
        want_gb[n, :r] += k * f(h[lo:hi, :r]).T @ f(gy[lo:hi])
        want_gx[lo:hi] = f(gh[lo:hi, :r]) @ f(a[n, :r])
        want_ga[n, :r] += f(gh[lo:hi, :r]).T @ f(x[lo:hi])
    for got, want in [(grad_h, want_gh), (grad_b, want_gb), (grad_x, want_gx), (grad_a, want_ga)]:
        assert got.dtype == dtype and got.shape == want.shape
        close(got, want, dtype, scale=want.abs().max().item())


@pytest.mark.parametrize("which", ["y", "x", "a", "b", "xb"])
def test_partial_requires_grad(which):
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    names = dict(y=y, x=x, a=a, b=b)
    leaves = {k: v.clone().requires_grad_(k in which) for k, v in names.items()}
    out = lora_apply(leaves["y"], leaves["x"], leaves["a"], leaves["b"], indptr, seg, rk, sc)
    out.square().sum().backward()
    ref = {k: v.clone().requires_grad_(k in which) for k, v in names.items()}
    ref_apply(ref["y"], ref["x"], ref["a"], ref["b"], indptr, seg, rk, sc).square().sum().backward()
    for k in names:
        if k in which:
            close(leaves[k].grad, ref[k].grad, torch.float32, scale=ref[k].grad.abs().max().item())
        else:
            assert leaves[k].grad is None


# ---- segments_from_adapter_ids / lora_apply_by_token --------------------------------------------


@pytest.mark.parametrize("T", [0, 1, 37])
def test_segments_from_adapter_ids(T):
    ids = torch.randint(-1, 5, (T,), generator=torch.Generator().manual_seed(T))
    perm, indptr, seg = segments_from_adapter_ids(ids)
    assert perm.dtype == indptr.dtype == seg.dtype == torch.int64
    assert sorted(perm.tolist()) == list(range(T))
    grouped = ids[perm]
    assert grouped.tolist() == sorted(ids.tolist())
    assert seg.tolist() == sorted(set(ids.tolist()))
    assert indptr[0] == 0 and indptr[-1] == T and bool((indptr.diff() > 0).all())
    for s, n in enumerate(seg.tolist()):
        block = perm[indptr[s] : indptr[s + 1]]
        assert (ids[block] == n).all()
        assert block.tolist() == sorted(block.tolist())  # stable: token order kept within an adapter


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lora_apply_by_token(dtype):
    _, _, a, b, _, _, rk, sc = make("ranks_4_and_64", dtype)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 5, a.shape[2], generator=gen).to(dtype)
    y = torch.randn(3, 5, b.shape[2], generator=gen).to(dtype)
    ids = torch.tensor([1, -1, 0, 1, 1, 0, -1, 1, 0, 0, 1, -1, 0, 1, 1])
    g = torch.randn(y.shape, generator=gen).to(dtype)

    def ref(y, x, a, b):  # one token at a time, original order
        rows = []
        for t, n in enumerate(ids.tolist()):
            yt, xt = y.reshape(15, -1)[t], x.reshape(15, -1)[t]
            if n < 0:
                rows.append(yt)
            else:
                r = int(rk[n])
                rows.append(yt + float(sc[n]) * ((xt @ a[n, :r].T) @ b[n, :r]))
        return torch.stack(rows).reshape(y.shape)

    got = _grads(lambda y_, x_, a_, b_: lora_apply_by_token(y_, x_, a_, b_, ids, rk, sc), y, x, a, b, g)
    want = _grads(ref, y.float(), x.float(), a.float(), b.float(), g.float())
    out = lora_apply_by_token(y, x, a, b, ids, rk, sc)
    close(out, ref(y.float(), x.float(), a.float(), b.float()), dtype)
    assert torch.equal(out.reshape(15, -1)[ids < 0], y.reshape(15, -1)[ids < 0])
    for gv, wv in zip(got, want):
        close(gv, wv, dtype, scale=wv.abs().max().item())


# ---- opcheck ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["minus1_mid", "empty_start_mid_end"])
def test_opcheck(case):
    x, y, a, b, indptr, seg, rk, sc = make(case, torch.float32)
    h = lora_shrink(x, a, indptr, seg, rk)
    gh = torch.randn_like(h)
    rg = lambda t: t.clone().requires_grad_()  # noqa: E731
    torch.library.opcheck(ops.lora_shrink, (rg(x), rg(a), indptr, seg, rk))
    torch.library.opcheck(ops.lora_expand, (rg(y), rg(h), rg(b), indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_expand_, (y.clone(), h, b, indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_expand_backward, (y, h, b, indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_shrink_backward, (gh, x, a, indptr, seg, rk))
    # the C++ autograd node of lora_apply (out of place and in place), with 2-D and 3-D token layouts
    torch.library.opcheck(ops.lora_apply, (rg(y), rg(x), rg(a), rg(b), indptr, seg, rk, sc))
    T = x.shape[0]
    if T % 3 == 0:
        torch.library.opcheck(ops.lora_apply, (rg(y).view(3, T // 3, -1), rg(x).view(3, T // 3, -1), rg(a), rg(b),
                                               indptr, seg, rk, sc))
    torch.library.opcheck(ops.lora_apply_, (y.clone(), rg(x), rg(a), rg(b), indptr, seg, rk, sc))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_determinism_many_segments(dtype):
    """Many interleaved segments per slot (multi-threaded GEMMs): bit-identical forward and grads."""
    gen = torch.Generator().manual_seed(7)
    lens = torch.randint(0, 40, (24,), generator=gen).tolist()
    adapters = [(s % 4) - 1 for s in range(24)]  # -1, 0, 1, 2 interleaved
    case = (lens, adapters, [16, 8, 16], 16, 576, 1536)
    x, y, a, b, indptr, seg, rk, sc = make(case, dtype)
    g = torch.randn(y.shape, generator=gen).to(dtype)
    idx = (indptr, seg, rk, sc)
    first = _grads(lambda *t: lora_apply(*t, *idx), y, x, a, b, g)
    second = _grads(lambda *t: lora_apply(*t, *idx), y, x, a, b, g)
    for u, v in zip(first, second):
        assert torch.equal(u, v)
    want = _grads(lambda *t: ref_apply(*t, *idx), y.float(), x.float(), a.float(), b.float(), g.float())
    for u, w in zip(first, want):
        close(u, w, dtype, scale=w.abs().max().item())


# ---- lora_apply_ (differentiable, in place) -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["minus1_mid", "same_adapter_nonadjacent", "rank0_slot", "smollm_576_1536"])
def test_lora_apply_inplace_equals_lora_apply(case, dtype):
    """Same values and gradients (wrt y, x, a, b) as lora_apply, with y updated where it lies; y here is a
    non-leaf (the output of another op), as a base layer's output is."""
    x, y, a, b, indptr, seg, rk, sc = make(case, dtype)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    want = _grads(lambda y_, x_, a_, b_: lora_apply(y_ * 1, x_, a_, b_, indptr, seg, rk, sc), y, x, a, b, g)
    got = _grads(lambda y_, x_, a_, b_: lora_apply_(y_ * 1, x_, a_, b_, indptr, seg, rk, sc), y, x, a, b, g)
    for name, gv, wv in zip("yxab", got, want):
        assert torch.equal(gv, wv), name
    target = y.clone()
    out = lora_apply_(target, x, a, b, indptr, seg, rk, sc)
    assert out.data_ptr() == target.data_ptr()
    assert torch.equal(out, lora_apply(y, x, a, b, indptr, seg, rk, sc))


@pytest.mark.parametrize("which", ["x", "a", "b"])
def test_lora_apply_inplace_partial_requires_grad(which):
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    leaf = {"x": x, "a": a, "b": b}[which].clone().requires_grad_()
    args = {"x": x, "a": a, "b": b, which: leaf}
    out = lora_apply_(y.clone(), args["x"], args["a"], args["b"], indptr, seg, rk, sc)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    args = {"x": x, "a": a, "b": b, which: leaf}
    (want,) = torch.autograd.grad(lora_apply(y, args["x"], args["a"], args["b"], indptr, seg, rk, sc).sum(), leaf)
    assert torch.equal(grad, want)


def test_lora_apply_inplace_refuses_bad_y_and_catches_stale_saves():
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    with pytest.raises(ValueError, match="contiguous"):
        lora_apply_(y.t().contiguous().t(), x, a, b, indptr, seg, rk, sc)
    with pytest.raises(ValueError, match="leading dims"):
        lora_apply_(y[:-1].clone(), x, a, b, indptr, seg, rk, sc)
    with pytest.raises(RuntimeError, match="leaf"):
        lora_apply_(y.clone().requires_grad_(), x, a, b, indptr, seg, rk, sc)
    w = torch.ones(y.shape[1], requires_grad=True)
    base = y * 1
    used = base * w  # saves base for its backward
    lora_apply_(base, x, a, b, indptr, seg, rk, sc)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        used.sum().backward()
