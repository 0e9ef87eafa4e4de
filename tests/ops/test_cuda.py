"""CUDA kernels of every mint op: CPU-vs-CUDA agreement on every case of shared/cases/README.md, and the
same independent references as the CPU tests (tests/ops/test_lora.py, test_adam.py, test_sampling.py).

Skipped as a whole when torch.cuda is unavailable or mint was built without CUDA kernels (the
`mint::sample` CUDA kernel is then missing); `bench/gpu_check.sh` runs these on a GPU machine.

Tolerances: LoRA uses the CPU tests' table (both devices accumulate in fp32, in different orders);
AdamW in fp32 is compared to 1e-6 relative (same per-element formula; only norms' summation order
differs); sampling must give the *same token* as the CPU op for the same row (both use one Philox draw
keyed by (seed, subsequence, offset) and an inverse-CDF walk in index order; they could differ only when
the draw lands within ~1e-12 of a bucket edge), and log-probs within 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch

import mint  # noqa: F401  (loads the extension)
from mint.ops.adam import fused_adamw
from mint.ops.lora import lora_expand, lora_shrink

from .test_lora import CASES, TOL, make, ref_apply, used_rows
from .test_sampling import check_rows, cosine, frequencies, raw_args, ref_probs


def _has_cuda_kernels() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("mint::sample", "CUDA")
    except Exception:  # pragma: no cover - older torch
        return False


pytestmark = pytest.mark.skipif(not _has_cuda_kernels(), reason="needs a GPU and mint built with CUDA")

ops = torch.ops.mint
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DEV = "cuda"

# The shared cases plus long segments (full 16-row tiles, several K chunks, ranks 8 / 16 / 64 mixed), so the
# tiled and tensor-core paths run as well as the decode path (tiles of <= 4 rows).
GPU_CASES = dict(CASES)
GPU_CASES["long_segments_2049_3424"] = ([40, 0, 37, 19], [1, 0, 2, 1], [16, 64, 8], 64, 2049, 3424)
GPU_CASES["long_576_1536_r64"] = ([33, 70], [0, 1], [64, 4], 64, 576, 1536)


@pytest.fixture(params=["tensor_cores", "fma"])
def kernel_path(request, monkeypatch):
    """Runs a test with the WMMA tensor-core LoRA kernels (default) and with MINT_LORA_TENSOR_CORES=0."""
    monkeypatch.setenv("MINT_LORA_TENSOR_CORES", "1" if request.param == "tensor_cores" else "0")
    return request.param


def to_dev(tensors):
    return [t.to(DEV) for t in tensors]


def close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), rtol=rtol, atol=atol * max(scale, 1.0))


# ------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(GPU_CASES))
@pytest.mark.parametrize("index_on", ["cuda", "cpu"])
def test_lora_forward_cpu_vs_cuda_and_reference(case, dtype, index_on, kernel_path):
    x, y, a, b, indptr, seg, rk, sc = make(GPU_CASES[case], dtype)
    xd, yd, ad, bd = to_dev([x, y, a, b])
    idx = [indptr, seg, rk] if index_on == "cpu" else to_dev([indptr, seg, rk])
    scd = sc if index_on == "cpu" else sc.to(DEV)
    h_cpu = ops.lora_shrink(x, a, indptr, seg, rk)
    h_gpu = ops.lora_shrink(xd, ad, *idx)
    close(h_gpu, h_cpu, dtype)
    out_cpu = ops.lora_expand(y, h_cpu, b, indptr, seg, rk, sc)
    out_gpu = ops.lora_expand(yd, h_gpu, bd, *idx, scd)
    close(out_gpu, out_cpu, dtype)
    ref = ref_apply(y.float(), x.float(), a.float(), b.float(), indptr, seg, rk, sc)
    close(out_gpu, ref, dtype)
    unused = ~used_rows(indptr, seg, rk)
    assert torch.equal(out_gpu.cpu()[unused], y[unused])  # -1 segments bit-identical
    assert torch.equal(h_gpu.cpu()[unused], torch.zeros_like(h_cpu[unused]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(GPU_CASES))
def test_lora_backward_cpu_vs_cuda_and_deterministic(case, dtype, kernel_path):
    x, y, a, b, indptr, seg, rk, sc = make(GPU_CASES[case], dtype)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=g).to(dtype)
    h = ops.lora_shrink(x, a, indptr, seg, rk)
    gh_cpu, gb_cpu = ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc)
    gx_cpu, ga_cpu = ops.lora_shrink_backward(gh_cpu, x, a, indptr, seg, rk)
    dev = to_dev([gy, h, b, x, a, indptr, seg, rk, sc])
    runs = []
    for _ in range(2):
        gh, gb = ops.lora_expand_backward(dev[0], dev[1], dev[2], *dev[5:9])
        gx, ga = ops.lora_shrink_backward(gh, dev[3], dev[4], *dev[5:8])
        runs.append([t.cpu() for t in (gh, gb, gx, ga)])
    for got, want in zip(runs[0], (gh_cpu, gb_cpu, gx_cpu, ga_cpu)):
        close(got, want, dtype, scale=want.float().abs().max().item() if want.numel() else 1.0)
    for r0, r1 in zip(*runs):
        assert torch.equal(r0, r1)  # bit-identical gradients


def test_lora_autograd_on_cuda_matches_reference():
    x, y, a, b, indptr, seg, rk, sc = make("ranks_4_and_64", torch.float32)
    xd, yd, ad, bd = (t.to(DEV).requires_grad_() for t in (x, y, a, b))
    idx = to_dev([indptr, seg, rk])
    out = lora_expand(yd, lora_shrink(xd, ad, *idx), bd, *idx, sc.to(DEV))
    gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    out.backward(gy.to(DEV))
    xr, yr, ar, br = (t.clone().requires_grad_() for t in (x, y, a, b))
    ref_apply(yr, xr, ar, br, indptr, seg, rk, sc).backward(gy)
    for got, want in ((xd, xr), (yd, yr), (ad, ar), (bd, br)):
        torch.testing.assert_close(got.grad.cpu(), want.grad, rtol=2e-5, atol=2e-5 * max(1.0, want.grad.abs().max().item()))


def test_lora_non_contiguous_x_and_inplace():
    x, y, a, b, indptr, seg, rk, sc = make("smollm_576_1536", torch.bfloat16)
    wide = torch.randn(x.shape[0], x.shape[1] + 7).to(torch.bfloat16)
    wide[:, 3 : 3 + x.shape[1]] = x
    xs = wide.to(DEV)[:, 3 : 3 + x.shape[1]]
    assert not xs.is_contiguous()
    idx = to_dev([indptr, seg, rk])
    close(ops.lora_shrink(xs, a.to(DEV), *idx), ops.lora_shrink(x, a, indptr, seg, rk), torch.bfloat16)
    h = ops.lora_shrink(x, a, indptr, seg, rk)
    yd = y.to(DEV)
    ops.lora_expand_(yd, h.to(DEV), b.to(DEV), *idx, sc.to(DEV))
    close(yd, ops.lora_expand(y, h, b, indptr, seg, rk, sc), torch.bfloat16)


@pytest.mark.parametrize(
    "change,match",
    [("adapter_oob", r"seg_adapter\[1\] = 9"), ("decreasing", "non-decreasing"), ("last", r"seg_indptr\[-1\]")],
)
def test_lora_bad_indices_name_the_argument(change, match):
    x, y, a, b, indptr, seg, rk, sc = make("minus1_mid", torch.float32)
    if change == "adapter_oob":
        seg = seg.clone()
        seg[1] = 9
    elif change == "decreasing":
        indptr = torch.tensor([0, 5, 3, 12])
    else:
        indptr = indptr.clone()
        indptr[-1] += 1
    with pytest.raises(RuntimeError, match=match):
        ops.lora_shrink(x.to(DEV), a.to(DEV), *to_dev([indptr, seg, rk]))


# ------------------------------------------------------------------------------------------ AdamW


def _adam_inputs(shapes, dtype, moment_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    m = [torch.randn(s, generator=g).abs().to(moment_dtype) * 0.1 for s in shapes]
    v = [torch.randn(s, generator=g).abs().to(moment_dtype) * 0.01 for s in shapes]
    return params, grads, m, v


@pytest.mark.parametrize("dtype,moment_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                                (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)])
def test_adamw_cpu_vs_cuda_groups_clip_none_empty(dtype, moment_dtype):
    shapes = [(1,), (278011,), (), (0,), (17, 3), (65536 * 2 + 5,)]
    hp = torch.tensor([[1e-3, 0.9, 0.95, 1e-12, 0.0, 0.0], [3e-3, 0.8, 0.99, 1e-8, 0.1, 0.5]], dtype=torch.float64)
    gid = torch.tensor([0, 1, 0, 1, 0, 1])
    cpu = _adam_inputs(shapes, dtype, moment_dtype)
    cpu[1][4] = None  # grad None: untouched, step not advanced
    gpu = [[t.to(DEV) if t is not None else None for t in lst] for lst in cpu]
    cpu = [[t.clone() if t is not None else None for t in lst] for lst in cpu]
    steps_c = torch.tensor([0, 3, 1, 0, 5, 2])
    steps_g = steps_c.to(DEV)
    for _ in range(7):
        n_cpu = fused_adamw(*cpu, steps_c, gid, hp)
        n_gpu = fused_adamw(*gpu, steps_g, gid.to(DEV), hp.to(DEV))
    torch.testing.assert_close(n_gpu.cpu(), n_cpu, rtol=1e-6, atol=0)
    assert torch.equal(steps_g.cpu(), steps_c)
    assert int(steps_c[4]) == 5
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 and moment_dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    for lst_c, lst_g in zip((cpu[0], cpu[2], cpu[3]), (gpu[0], gpu[2], gpu[3])):
        for tc, tg in zip(lst_c, lst_g):
            torch.testing.assert_close(tg.cpu().float(), tc.float(), **tol)


def test_adamw_matches_torch_adamw_on_cuda():
    p = torch.randn(1000, 33, device=DEV)
    ref = p.clone().requires_grad_()
    opt = torch.optim.AdamW([ref], lr=1e-3, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.1, foreach=False)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    steps = torch.zeros(1, dtype=torch.int64)
    hp = torch.tensor([[1e-3, 0.9, 0.95, 1e-12, 0.1, 0.0]], dtype=torch.float64)
    for i in range(7):
        g = torch.randn(p.shape, generator=torch.Generator().manual_seed(i)).to(DEV)
        ref.grad = g.clone()
        opt.step()
        fused_adamw([p], [g], [m], [v], steps, torch.zeros(1, dtype=torch.int64), hp)
    torch.testing.assert_close(p, ref.detach(), rtol=1e-6, atol=1e-7)


def test_adamw_bad_input_changes_nothing():
    p = torch.randn(10, device=DEV)
    before = p.clone()
    with pytest.raises(RuntimeError, match=r"grads\[0\] must have the shape"):
        fused_adamw([p], [torch.randn(11, device=DEV)], [torch.zeros_like(p)], [torch.zeros_like(p)],
                    torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
                    torch.tensor([[1e-3, 0.9, 0.95, 1e-12, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(p, before)


# --------------------------------------------------------------------------------------- sampling


def _same_tokens(logits, **kw):
    args = raw_args(logits, **kw)
    t_cpu, lp_cpu = ops.sample(*args)
    t_gpu, lp_gpu = ops.sample(*[a.to(DEV) for a in args])
    assert torch.equal(t_gpu.cpu(), t_cpu)
    both_nan = torch.isnan(lp_cpu) & torch.isnan(lp_gpu.cpu())
    assert torch.all(both_nan | ((lp_gpu.cpu() - lp_cpu).abs() <= 1e-5))
    return t_gpu.cpu(), lp_gpu.cpu()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("vocab", [1, 7, 49153, 152064])
@pytest.mark.parametrize("top_k,top_p", [(-1, 1.0), (5, 1.0), (-1, 0.7), (8, 0.6), (2**30, 0.9), (1, 1.0)])
def test_sample_same_token_as_cpu(dtype, vocab, top_k, top_p):
    g = torch.Generator().manual_seed(vocab)
    logits = (torch.randn(6, vocab, generator=g) * 3).to(dtype)
    temp = torch.tensor([1.0, 0.7, 0.0, 1.3, 0.0, 2.0])
    seed = torch.arange(6) * 1000 + 7
    tokens, logprobs = _same_tokens(logits, temperature=temp, top_k=top_k, top_p=top_p, seed=seed, offset=3)
    assert int(tokens.max()) < vocab
    tk = torch.full((6,), top_k)
    tp = torch.full((6,), top_p)
    check_rows(logits, temp, tk, tp, tokens, logprobs)


def test_sample_invalid_rows_ties_and_neg_inf():
    logits = torch.randn(5, 1000)
    logits[1] = float("nan")
    logits[2] = -math.inf
    logits[3, 10] = math.inf
    logits[4] = 0.0  # ties everywhere: top-k keeps the lowest indices
    logits[0, ::2] = -math.inf
    tokens, logprobs = _same_tokens(logits, top_k=torch.tensor([-1, -1, -1, -1, 3]), seed=5)
    assert tokens[1:4].tolist() == [-1, -1, -1] and torch.isnan(logprobs[1:4]).all()
    assert int(tokens[0]) % 2 == 1 and 0 <= int(tokens[4]) < 3


def test_sample_batch_invariance_and_distinct_subsequences():
    logits = torch.zeros(4, 64)
    args = raw_args(logits.to(DEV), seed=11, subsequence=torch.arange(4))
    tokens, _ = ops.sample(*[a.to(DEV) for a in args])
    assert len(set(tokens.tolist())) > 1
    bigger = torch.cat([logits, torch.randn(3, 64)]).to(DEV)
    args2 = raw_args(bigger, seed=11, subsequence=torch.tensor([0, 1, 2, 3, 9, 9, 9]))
    tokens2, _ = ops.sample(*[a.to(DEV) for a in args2])
    assert torch.equal(tokens2[:4], tokens)


@pytest.mark.parametrize("top_k,top_p", [(-1, 1.0), (5, 1.0), (-1, 0.7)])
def test_sample_frequencies_match_reference(top_k, top_p):
    row = torch.randn(50, generator=torch.Generator().manual_seed(2))
    n = 20000
    logits = row.expand(n, 50).contiguous().to(DEV)
    args = raw_args(logits, temperature=0.8, top_k=top_k, top_p=top_p, seed=3, subsequence=torch.arange(n))
    tokens, _ = ops.sample(*[a.to(DEV) for a in args])
    assert cosine(frequencies(tokens.cpu(), 50), ref_probs(row, 0.8, top_k, top_p)) > 0.99


def test_sample_bad_params_name_the_argument():
    logits = torch.randn(2, 10, device=DEV)
    args = list(raw_args(logits))
    args = [a.to(DEV) for a in args]
    args[1] = torch.tensor([1.0, -1.0], device=DEV)
    with pytest.raises(RuntimeError, match=r"temperature\[1\]"):
        ops.sample(*args)
