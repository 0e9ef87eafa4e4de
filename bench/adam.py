"""Fused AdamW on CPU: one mint call vs torch.optim.AdamW (fused=True and foreach=True).

    python -m bench.adam [--repeats 5]

Case (i): 8 adapters x the LoRA tensors of a 30-layer SmolLM2-sized model (7 projections, rank 16), each
adapter with its own learning rate: one mint call for all 8 vs one torch optimizer per adapter.
Case (ii): 16 tensors of 4M elements. An fp32 AdamW step moves 28 bytes per parameter (read p, g, m, v;
write p, m, v, in place); the bound is that traffic at the machine's measured read-modify-write bandwidth
(``a.add_(b)``, the same in-place pattern; see bench/common.py), with the same threads.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import bound_seconds, describe_limits, machine, machine_limits, median_time, print_table
from mint import ops

PROJ = [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)]


def lora_shapes(rank: int = 16, layers: int = 30) -> list[tuple[int, int]]:
    return [s for _ in range(layers) for d_in, d_out in PROJ for s in ((rank, d_in), (rank, d_out))]


def make_groups(shape_groups: list[list[tuple[int, ...]]]):
    gen = torch.Generator().manual_seed(0)
    groups = []
    for shapes in shape_groups:
        params = [torch.randn(s, generator=gen) for s in shapes]
        grads = [torch.randn(s, generator=gen) for s in shapes]
        groups.append((params, grads))
    return groups


def mint_runner(groups, lrs):
    params = [p.clone() for ps, _ in groups for p in ps]
    grads = [g for _, gs in groups for g in gs]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    steps = torch.zeros(len(params), dtype=torch.int64)
    gid = torch.tensor([i for i, (ps, _) in enumerate(groups) for _ in ps], dtype=torch.int64)
    hp = torch.tensor([[lr, 0.9, 0.95, 1e-12, 0.01, 0.0] for lr in lrs], dtype=torch.float64)
    return lambda: ops.fused_adamw(params, grads, m, v, steps, gid, hp)


def torch_runner(groups, lrs, **kwargs):
    optims = []
    for (ps, gs), lr in zip(groups, lrs):
        params = [torch.nn.Parameter(p.clone()) for p in ps]
        for p, g in zip(params, gs):
            p.grad = g
        optims.append(torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.01, **kwargs))

    def step():
        for opt in optims:
            opt.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    limits = machine_limits()
    print(f"machine: {machine()}\nceilings: {describe_limits(limits)}")
    cases = {
        "(i) 8 adapters x 420 LoRA tensors": [lora_shapes()] * 8,
        "(ii) 16 x 4M fp32": [[(4 * 2**20,)] * 16],
    }
    rows = []
    for name, shape_groups in cases.items():
        groups = make_groups(shape_groups)
        lrs = [1e-4 * (i + 1) for i in range(len(groups))]
        numel = sum(p.numel() for ps, _ in groups for p in ps)
        bound = bound_seconds(28 * numel, 0, limits, memory="rmw")
        t_mint = median_time(mint_runner(groups, lrs), args.repeats)
        t_fused = median_time(torch_runner(groups, lrs, fused=True), args.repeats)
        t_foreach = median_time(torch_runner(groups, lrs, foreach=True), args.repeats)
        rows.append([name, f"{numel / 1e6:.1f}M", f"{t_mint * 1e3:.2f}", f"{t_fused * 1e3:.2f}",
                     f"{t_foreach * 1e3:.2f}", f"{t_fused / t_mint:.2f}x", f"{t_foreach / t_mint:.2f}x",
                     f"{bound / t_mint:.0%}", f"{bound / t_fused:.0%}"])
    print_table(f"AdamW step, ms (median of {args.repeats}); bound = 28 B/param at the read-modify-write bandwidth",
                ["case", "params", "mint", "torch fused", "torch foreach", "vs fused", "vs foreach",
                 "mint of bound", "fused of bound"], rows)


if __name__ == "__main__":
    main()
