"""Timing helpers shared by the benchmarks: medians over repeats, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> str:
    """A one-line description of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def machine_limits(size_mb: int = 256, matmul_n: int = 2048) -> dict[str, float]:
    """This machine's measured ceilings, in the same run: memory copy GB/s (bytes read + written) and fp32 GFLOP/s."""
    import torch

    src = torch.empty(size_mb * 2**20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    t_copy = median_time(lambda: dst.copy_(src), repeats=5)
    a = torch.randn(matmul_n, matmul_n)
    b = torch.randn(matmul_n, matmul_n)
    t_mm = median_time(lambda: a @ b, repeats=3)
    return {"copy_gbps": 2 * src.numel() * 4 / t_copy / 1e9, "matmul_gflops": 2 * matmul_n**3 / t_mm / 1e9}


def bound_seconds(bytes_moved: float, flops: float, limits: dict[str, float]) -> float:
    """The op's lower bound on this machine: the larger of its memory time and its compute time."""
    return max(bytes_moved / (limits["copy_gbps"] * 1e9), flops / (limits["matmul_gflops"] * 1e9))


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain fixed-width table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
