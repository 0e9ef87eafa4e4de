"""Fused top-k / top-p sampling on CPU: mint vs the sort-based PyTorch reference and softmax + multinomial.

    python -m bench.sampling [--full] [--dtype float32|bfloat16] [--repeats 5]

The bound is one read of the logits at the machine's measured read bandwidth (``x.sum()`` over 256 MB, same
threads; see bench/common.py). Rows smaller than the caches are re-read from cache across repeats, so small
cases can exceed 100% of that DRAM bound.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from bench.common import bound_seconds, describe_limits, machine, machine_limits, median_time, print_table
from mint import ops


def sort_reference(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The usual PyTorch way: sort, mask top-k and top-p, softmax, multinomial."""
    z = logits.float() / temperature
    sorted_z, idx = torch.sort(z, dim=-1, descending=True)
    sorted_z[:, top_k:] = float("-inf")
    probs = torch.softmax(sorted_z, dim=-1)
    cum = probs.cumsum(-1)
    sorted_z[(cum - probs) > top_p] = float("-inf")
    choice = torch.multinomial(torch.softmax(sorted_z, -1), 1)
    return idx.gather(-1, choice)


def plain_multinomial(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    limits = machine_limits()
    print(f"machine: {machine()}\nceilings: {describe_limits(limits)}")
    grid = list(itertools.product([1, 16, 64, 256], [49152, 151936])) if args.full else [(1, 49152), (64, 151936)]
    rows = []
    for batch, vocab in grid:
        logits = (torch.randn(batch, vocab, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
        seeds = torch.arange(batch, dtype=torch.int64)
        t_mint = median_time(lambda: ops.sample(logits, 0.8, 50, 0.9, seeds), args.repeats)
        t_plain_mint = median_time(lambda: ops.sample(logits, 0.8, -1, 1.0, seeds), args.repeats)
        t_sort = median_time(lambda: sort_reference(logits, 0.8, 50, 0.9), args.repeats)
        t_multi = median_time(lambda: plain_multinomial(logits, 0.8), args.repeats)
        bound = bound_seconds(logits.numel() * logits.element_size(), 0, limits, memory="read")
        rows.append([batch, vocab, f"{t_mint * 1e3:.3f}", f"{t_plain_mint * 1e3:.3f}", f"{t_sort * 1e3:.3f}",
                     f"{t_multi * 1e3:.3f}", f"{t_sort / t_mint:.1f}x", f"{t_multi / t_mint:.2f}x",
                     f"{bound / t_mint:.0%}"])
    print_table(f"sampling, {args.dtype}, ms (median of {args.repeats}); mint with top_k=50 top_p=0.9, and unfiltered",
                ["B", "V", "mint k+p", "mint plain", "sort ref", "softmax+multinomial", "vs sort", "vs multinomial",
                 "of bound"], rows)


if __name__ == "__main__":
    main()
