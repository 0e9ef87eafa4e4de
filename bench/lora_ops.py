"""Multi-adapter LoRA forward and backward on CPU: mint vs the PyTorch ways of doing it.

    python -m bench.lora_ops [--full] [--dtype float32|bfloat16] [--repeats 5] [--keep-freed-memory]

Baselines: (a) a per-adapter loop that gathers each adapter's rows, multiplies and scatters back (as
PEFT's mixed-batch forward does); (b) gathering each token's adapter weights and using bmm (as a serving
engine's PyTorch fallback does; skipped where it would need over 1 GiB); backward: autograd through (a).
"""

from __future__ import annotations

import argparse
import itertools

import torch

from bench.common import (bound_seconds, describe_limits, interleaved_medians, keep_freed_memory, machine,
                          machine_limits, print_table)
from mint import ops

# A timing sample of a sub-millisecond call is the mean of back-to-back calls filling this long; contenders are
# sampled round-robin and each figure is the median of the samples.
MIN_SAMPLE_S = 0.02

SHAPES = [(576, 576), (576, 1536), (1536, 576), (4096, 4096), (4096, 11008)]


def make_case(t: int, k: int, rank: int, d_in: int, d_out: int, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(t, d_in, generator=gen).to(dtype)
    y = torch.randn(t, d_out, generator=gen).to(dtype)
    a = (torch.randn(k, rank, d_in, generator=gen) / d_in**0.5).to(dtype)
    b = (torch.randn(k, rank, d_out, generator=gen) / rank**0.5).to(dtype)
    ids = torch.sort(torch.randint(0, k, (t,), generator=gen)).values
    _, indptr, adapters = ops.segments_from_adapter_ids(ids)
    ranks = torch.full((k,), rank, dtype=torch.int64)
    scales = torch.full((k,), 2.0, dtype=torch.float32)
    return x, y, a, b, ids, indptr, adapters, ranks, scales


def loop_forward(x, y, a, b, ids, scale=2.0):
    out = y.clone()
    for n in torch.unique(ids).tolist():
        rows = (ids == n).nonzero(as_tuple=True)[0]
        out.index_add_(0, rows, scale * (x.index_select(0, rows) @ a[n].T) @ b[n])
    return out


def bmm_forward(x, y, a, b, ids, scale=2.0):
    h = torch.bmm(a[ids], x.unsqueeze(-1)).squeeze(-1)  # [T, r]
    return y + scale * torch.bmm(h.unsqueeze(1), b[ids]).squeeze(1)


def gemm_floor(x, y, a, b, indptr, adapters, scale=2.0):
    """The clone-then-GEMMs arrangement: a full copy of y, then per segment (rows sorted by adapter, so each is
    a contiguous view) one shrink GEMM and one expand GEMM accumulating into the copy. mint copies each slot's
    rows of y right before its GEMM (while they are in cache), so it can beat this."""
    out = y.clone()
    bounds = indptr.tolist()
    for i, n in enumerate(adapters.tolist()):
        r0, r1 = bounds[i], bounds[i + 1]
        out[r0:r1].addmm_(x[r0:r1] @ a[n].T, b[n], alpha=scale)
    return out


def run(cases, dtype: torch.dtype, repeats: int, limits) -> tuple[list, list]:
    fwd_rows, bwd_rows = [], []
    for (d_in, d_out), t, k, rank in cases:
        x, y, a, b, ids, indptr, adapters, ranks, scales = make_case(t, k, rank, d_in, d_out, dtype)
        used = int(torch.unique(ids).numel())
        itemsize = x.element_size()
        bytes_fwd = itemsize * (t * d_in + 2 * t * d_out + used * rank * (d_in + d_out))
        flops_fwd = 2 * t * rank * (d_in + d_out)
        compute = "matmul_bf16" if dtype == torch.bfloat16 else "matmul"
        bound = bound_seconds(bytes_fwd, flops_fwd, limits, compute=compute)
        gather_bytes = t * rank * (d_in + d_out) * itemsize
        fns = {"mint": lambda: ops.lora_apply(y, x, a, b, indptr, adapters, ranks, scales),
               "loop": lambda: loop_forward(x, y, a, b, ids)}
        if gather_bytes < 2**30:
            fns["bmm"] = lambda: bmm_forward(x, y, a, b, ids)
        if dtype == torch.float32:
            fns["floor"] = lambda: gemm_floor(x, y, a, b, indptr, adapters)
        times = interleaved_medians(fns, repeats, min_sample_s=MIN_SAMPLE_S)
        t_mint, t_loop = times["mint"], times["loop"]
        t_bmm, t_floor = times.get("bmm", float("nan")), times.get("floor", float("nan"))
        best = min(t_loop, t_bmm) if t_bmm == t_bmm else t_loop
        fwd_rows.append([f"{d_in}->{d_out}", t, k, rank, f"{t_mint * 1e3:.3f}", f"{t_loop * 1e3:.3f}",
                         "n/a" if t_bmm != t_bmm else f"{t_bmm * 1e3:.3f}", f"{best / t_mint:.2f}x",
                         f"{bound / t_mint:.0%}", "n/a" if t_floor != t_floor else f"{t_floor * 1e3:.3f}",
                         "n/a" if t_floor != t_floor else f"{best / t_floor:.2f}x"])

        xg, ag, bg = (v.clone().requires_grad_(True) for v in (x, a, b))
        grad_out = torch.randn(t, d_out).to(dtype)

        def mint_bwd():
            out = ops.lora_apply(y, xg, ag, bg, indptr, adapters, ranks, scales)
            torch.autograd.grad(out, (xg, ag, bg), grad_out)

        def loop_bwd():
            out = loop_forward(xg, y, ag, bg, ids)
            torch.autograd.grad(out, (xg, ag, bg), grad_out)

        times = interleaved_medians({"mint": mint_bwd, "loop": loop_bwd}, repeats, min_sample_s=MIN_SAMPLE_S)
        t_mb, t_lb = times["mint"], times["loop"]
        bound_b = bound_seconds(3 * bytes_fwd, 3 * flops_fwd, limits, compute=compute)
        bwd_rows.append([f"{d_in}->{d_out}", t, k, rank, f"{t_mb * 1e3:.3f}", f"{t_lb * 1e3:.3f}",
                         f"{t_lb / t_mb:.2f}x", f"{bound_b / t_mb:.0%}"])
    return fwd_rows, bwd_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every shape x T x K x rank of the issue")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory (see bench.common.keep_freed_memory), for every contender")
    args = parser.parse_args(argv)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc")
    dtype = getattr(torch, args.dtype)
    if args.full:
        cases = list(itertools.product(SHAPES, [16, 256, 2048], [1, 4, 16, 64], [8, 16, 64]))
    else:
        cases = [((576, 1536), t, k, 16) for t, k in [(16, 4), (256, 1), (256, 4), (256, 16), (2048, 64)]]
        cases += [((4096, 4096), 256, 4, 16), ((1536, 576), 2048, 16, 64)]
    limits = machine_limits()
    print(f"machine: {machine()}\nceilings: {describe_limits(limits)}")
    print("bound: the larger of the bytes (x, y read and written, the used adapters' A and B; backward 3x) at the "
          "read-modify-write bandwidth and the FLOPs at the matmul rate of the dtype")
    fwd, bwd = run(cases, dtype, args.repeats, limits)
    print_table(f"LoRA forward (shrink + expand), {args.dtype}, ms (median of {args.repeats} round-robin samples, "
                f"each >= {MIN_SAMPLE_S * 1e3:.0f} ms of back-to-back calls)",
                ["shape", "T", "K", "rank", "mint", "loop", "bmm", "vs best", "of bound", "gemm floor",
                 "best/floor"], fwd)
    print("gemm floor: y.clone() + one shrink and one expand GEMM per segment on contiguous views (fp32 only), "
          "with BLAS's threads; best/floor: what that arrangement reaches against the best baseline")
    print_table(f"LoRA backward (forward + dx, dA, dB), {args.dtype}, ms",
                ["shape", "T", "K", "rank", "mint", "autograd loop", "vs loop", "of bound"], bwd)
    print_targets(fwd, bwd)


def print_targets(fwd: list, bwd: list) -> None:
    """How many rows meet the issue's LoRA targets, and the rows that do not."""
    ratio = lambda s: float(s.rstrip("x"))  # noqa: E731
    k4 = [r for r in fwd if r[2] >= 4]
    k1 = [r for r in fwd if r[2] == 1]
    checks = [("forward >= 2x the best baseline, K >= 4", k4, 7, 2.0),
              ("forward >= 1x the best baseline, K = 1", k1, 7, 1.0),
              ("backward >= 2x the autograd loop", bwd, 6, 2.0)]
    print("\ntargets:")
    for name, rows, col, want in checks:
        if not rows:
            continue
        low = [r for r in rows if ratio(r[col]) < want]
        print(f"  {name}: {len(rows) - len(low)}/{len(rows)} rows (min {min(ratio(r[col]) for r in rows):.2f}x)")
        for r in low:
            reached = float((r[-1] if col == 6 else r[8]).rstrip("%")) / 100
            needed = reached * want / ratio(r[col])  # the fraction of the bound at which mint would meet it
            print(f"    below: {r[0]} T={r[1]} K={r[2]} rank={r[3]}: {r[col]} at {reached:.0%} of bound; "
                  f"the target needs {needed:.0%}")


if __name__ == "__main__":
    main()
