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

from bench.common import bound_seconds, describe_limits, interleaved_medians, machine, machine_limits, print_table
from mint import ops

PROJ = [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)]


def lora_shapes(rank: int = 16, layers: int = 30) -> list[tuple[int, int]]:
    return [s for _ in range(layers) for d_in, d_out in PROJ for s in ((rank, d_in), (rank, d_out))]


class Tensors:
    """One set of params, grads and Adam moments per group, shared by every contender: the allocator and the
    VM place large buffers on memory of different speed, so each contender must stream the same memory."""

    def __init__(self, shape_groups: list[list[tuple[int, ...]]]):
        gen = torch.Generator().manual_seed(0)
        self.groups = []
        for shapes in shape_groups:
            params = [torch.randn(s, generator=gen) for s in shapes]
            grads = [torch.randn(s, generator=gen) for s in shapes]
            moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
            self.groups.append((params, grads, moments))


class CarvedTensors(Tensors):
    """The same shapes as views into one buffer per role (params, grads, exp_avg, exp_avg_sq), laid end to end:
    what the storage of separately allocated tensors costs, with the tensor count unchanged."""

    def __init__(self, shape_groups: list[list[tuple[int, ...]]]):
        total = sum(torch.Size(s).numel() for shapes in shape_groups for s in shapes)
        gen = torch.Generator().manual_seed(0)
        bufs = [torch.randn(total, generator=gen), torch.randn(total, generator=gen), torch.zeros(total),
                torch.zeros(total)]
        self.groups, offset = [], 0
        for shapes in shape_groups:
            params, grads, moments = [], [], []
            for s in shapes:
                n = torch.Size(s).numel()
                p, g, m, v = (b[offset:offset + n].view(s) for b in bufs)
                offset += n
                params.append(p)
                grads.append(g)
                moments.append((m, v))
            self.groups.append((params, grads, moments))


def mint_runner(tensors: Tensors, lrs):
    params = [p for ps, _, _ in tensors.groups for p in ps]
    grads = [g for _, gs, _ in tensors.groups for g in gs]
    m = [mv[0] for _, _, ms in tensors.groups for mv in ms]
    v = [mv[1] for _, _, ms in tensors.groups for mv in ms]
    steps = torch.zeros(len(params), dtype=torch.int64)
    gid = torch.tensor([i for i, (ps, _, _) in enumerate(tensors.groups) for _ in ps], dtype=torch.int64)
    hp = torch.tensor([[lr, 0.9, 0.95, 1e-12, 0.01, 0.0] for lr in lrs], dtype=torch.float64)
    return lambda: ops.fused_adamw(params, grads, m, v, steps, gid, hp)


def torch_runner(tensors: Tensors, lrs, **kwargs):
    """One torch.optim.AdamW per group over the same storage (params wrap it, the state holds its moments)."""
    optims = []
    for (ps, gs, ms), lr in zip(tensors.groups, lrs):
        params = [torch.nn.Parameter(p) for p in ps]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.01, **kwargs)
        for p, g, (m, v) in zip(params, gs, ms):
            p.grad = g
            opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": m, "exp_avg_sq": v}
        optims.append(opt)

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
    rows, notes = [], []
    for name, shape_groups in cases.items():
        tensors = Tensors(shape_groups)
        lrs = [1e-4 * (i + 1) for i in range(len(tensors.groups))]
        numel = sum(p.numel() for ps, _, _ in tensors.groups for p in ps)
        bound = bound_seconds(28 * numel, 0, limits, memory="rmw")
        copy_bound = bound_seconds(28 * numel, 0, limits, memory="copy")  # the yardstick, see main()
        fns = {"mint": mint_runner(tensors, lrs), "fused": torch_runner(tensors, lrs, fused=True),
               "foreach": torch_runner(tensors, lrs, foreach=True)}
        layouts = len(tensors.groups) > 1
        if layouts:  # the same bytes in fewer, longer streams: what the tensor layout itself costs
            fns["carved"] = mint_runner(CarvedTensors(shape_groups), lrs)
            fns["one tensor"] = mint_runner(Tensors([[(numel,)]]), lrs[:1])
        t = interleaved_medians(fns, args.repeats)
        t_mint, t_fused, t_foreach = t["mint"], t["fused"], t["foreach"]
        if layouts:
            notes.append(f"{name}, the same {numel / 1e6:.1f}M parameters with mint: {t_mint * 1e3:.2f} ms as "
                         f"{sum(len(ps) for ps, _, _ in tensors.groups)} separately allocated tensors "
                         f"({bound / t_mint:.0%} of bound), {t['carved'] * 1e3:.2f} ms as the same tensors carved "
                         f"from one buffer per role ({bound / t['carved']:.0%}), {t['one tensor'] * 1e3:.2f} ms as "
                         f"one tensor ({bound / t['one tensor']:.0%})")
        rows.append([name, f"{numel / 1e6:.1f}M", f"{t_mint * 1e3:.2f}", f"{t_fused * 1e3:.2f}",
                     f"{t_foreach * 1e3:.2f}", f"{t_fused / t_mint:.2f}x", f"{t_foreach / t_mint:.2f}x",
                     f"{bound / t_mint:.0%}", f"{bound / t_fused:.0%}", f"{copy_bound / t_mint:.0%}",
                     f"{copy_bound / t_fused:.0%}"])
    print_table(f"AdamW step, ms (median of {args.repeats}, contenders interleaved on the same tensors); "
                "bound = 28 B/param at the read-modify-write bandwidth; copy = 28 B/param at the copy figure",
                ["case", "params", "mint", "torch fused", "torch foreach", "vs fused", "vs foreach",
                 "mint of bound", "fused of bound", "mint of copy", "fused of copy"], rows)
    print("of copy: the issue's yardstick (28 B/param over dst.copy_(src) counted as 8 B/elem); the copy moves 12 "
          "B/elem with write-allocate, so this overstates the fraction by up to 1.5x: 'of bound' is the strict one")
    for note in notes:
        print(f"layout: {note}")


if __name__ == "__main__":
    main()
