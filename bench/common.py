"""Timing helpers shared by the benchmarks: medians over repeats, machine facts."""

from __future__ import annotations

import math
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


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                        min_sample_s: float = 0.0) -> dict[str, float]:
    """Median wall-clock seconds of each ``fns[name]()``, timed round-robin (one sample of each in turn, the
    order rotated every round) so that a slow phase of a shared machine hits every contender alike. With ``min_sample_s`` a sample of a fast
    function is the mean of as many back-to-back calls as fill that time (sub-millisecond calls are otherwise
    at the mercy of one interrupt)."""
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        once = (time.perf_counter() - start) / max(1, warmup)
        calls[name] = max(1, math.ceil(min_sample_s / once)) if min_sample_s > 0 and once > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(repeats):
        # rotate the order each round, so no contender always runs right after the same one (one that churns
        # memory or caches would otherwise tax its successor in every sample)
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            fn = fns[name]
            n = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> str:
    """A one-line description of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    isa = torch.backends.cpu.get_cpu_capability()
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
        cpu = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        if " avx512_bf16" in info:
            isa += " + AVX512-BF16"
        if " amx_bf16" in info:
            isa += " + AMX-BF16" + (" (off: MINT_CPU_AMX=0)" if os.environ.get("MINT_CPU_AMX") == "0" else "")
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({isa}), {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Fastest wall-clock seconds of ``fn()`` over ``repeats`` runs (for ceilings: the machine's best)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_limits(size_mb: int = 256, matmul_n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """This machine's measured ceilings, in the same run and with torch's intra-op thread count (the threads
    mint's kernels use); each is the best of ``repeats`` timings.

    - ``read_gbps``: the faster of ``x.sum()`` and ``x.amax()`` over ``size_mb`` MB of fp32, bytes read per
      second: the ceiling of ops that only read (sampling).
    - ``rmw_gbps``: ``a.add_(b)``, 12 bytes per element (read a and b, write a back): the ceiling of
      in-place updates (AdamW's 28 bytes per parameter, LoRA's ``y +=``).
    - ``copy_gbps``: ``dst.copy_(src)`` counted as 8 bytes per element (read + write). The CPU also reads
      each destination line before overwriting it (write-allocate), so the memory moves 12 bytes per
      element and this figure understates the bandwidth by up to 1.5x: shown for reference, not a bound.
    - ``matmul_gflops``: a ``matmul_n``-square fp32 matmul; ``matmul_bf16_gflops`` the same in bf16 (faster
      than fp32 on CPUs with bf16 dot-product instructions; the compute ceiling of bf16 ops).
    """
    import torch

    n = size_mb * 2**20 // 4
    src = torch.empty(n, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src).uniform_()
    t_copy = best_time(lambda: dst.copy_(src), repeats)
    t_read = min(best_time(lambda: src.sum(), repeats), best_time(lambda: src.amax(), repeats))
    t_rmw = best_time(lambda: dst.add_(src), repeats)
    del src, dst
    a = torch.randn(matmul_n, matmul_n)
    b = torch.randn(matmul_n, matmul_n)
    t_mm = best_time(lambda: a @ b, max(3, repeats // 2))
    a16, b16 = a.bfloat16(), b.bfloat16()
    t_mm16 = best_time(lambda: a16 @ b16, max(3, repeats // 2))
    return {
        "read_gbps": 4 * n / t_read / 1e9,
        "rmw_gbps": 12 * n / t_rmw / 1e9,
        "copy_gbps": 8 * n / t_copy / 1e9,
        "matmul_gflops": 2 * matmul_n**3 / t_mm / 1e9,
        "matmul_bf16_gflops": 2 * matmul_n**3 / t_mm16 / 1e9,
    }


def describe_limits(limits: dict[str, float]) -> str:
    """One line with the measured ceilings."""
    return (f"read {limits['read_gbps']:.1f} GB/s (x.sum() / x.amax()), read-modify-write {limits['rmw_gbps']:.1f} GB/s "
            f"(a.add_(b), 12 B/elem), copy {limits['copy_gbps']:.1f} GB/s (dst.copy_(src) as 8 B/elem; "
            f"write-allocate makes it 12), matmul {limits['matmul_gflops']:.0f} GFLOP/s fp32, "
            f"{limits['matmul_bf16_gflops']:.0f} GFLOP/s bf16")


def bound_seconds(bytes_moved: float, flops: float, limits: dict[str, float], memory: str = "rmw",
                  compute: str = "matmul") -> float:
    """The op's lower bound on this machine: the larger of its memory time and its compute time.

    ``memory`` names the bandwidth that applies to the op's access pattern: "read" (reads only) or "rmw"
    (reads plus in-place writes); ``compute`` the matmul rate: "matmul" (fp32) or "matmul_bf16".
    """
    return max(bytes_moved / (limits[f"{memory}_gbps"] * 1e9), flops / (limits[f"{compute}_gflops"] * 1e9))


def keep_freed_memory() -> bool:
    """Asks glibc to keep freed memory in the process (no heap trimming; blocks up to 32 MB from the heap
    instead of fresh mappings), so that a new tensor reuses pages instead of faulting in fresh ones (about
    1-2 us per 4 KB page on these VMs). Process-wide: every contender runs under it. False where the C
    library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 2**31 - 1)) and bool(libc.mallopt(m_mmap_threshold, 32 * 2**20))


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain fixed-width table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths)))
