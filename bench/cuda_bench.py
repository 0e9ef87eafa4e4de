"""CUDA benchmarks of every mint op against a PyTorch reference measured in the same run (and FlashInfer
for sampling when `flashinfer-python` is installed). Prints one table: per op, time, achieved GB/s or
TFLOP/s, percent of the H200's peak (4.8 TB/s HBM3e; 989 dense bf16 TFLOP/s; 67 fp32 TFLOP/s without
tensor cores), and the ratio reference time / mint time (> 1: mint is faster).

Run by bench/gpu_check.sh; not yet run on a GPU. Times are CUDA-event medians of 20 runs after warm-up.
"""

from __future__ import annotations

import statistics

import torch

import mint  # noqa: F401
from mint.ops.adam import fused_adamw

ops = torch.ops.mint
DEV = "cuda"
PEAK_GBS = 4800.0
PEAK_TFLOPS = {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 67.0}
ROWS: list[tuple] = []


def timeit(fn, reps: int = 20) -> float:
    """Median milliseconds of fn() over `reps` timed runs."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def add(name, ms, ref_ms, nbytes=None, flops=None, dtype=torch.bfloat16, ref_name="torch"):
    if flops is not None:
        rate = flops / ms / 1e9
        rate_s, pct = f"{rate:8.2f} TFLOP/s", 100 * rate / PEAK_TFLOPS[dtype]
    else:
        rate = nbytes / ms / 1e6
        rate_s, pct = f"{rate:8.1f} GB/s", 100 * rate / PEAK_GBS
    ROWS.append((name, ms, rate_s, pct, ref_ms / ms if ref_ms else float("nan"), ref_name))


def lora_case(name, T, seg_len, n_adapters, rank, din, dout, dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(T, din, device=DEV, dtype=dtype, generator=g)
    y = torch.randn(T, dout, device=DEV, dtype=dtype, generator=g)
    a = torch.randn(n_adapters, rank, din, device=DEV, dtype=dtype, generator=g) / din**0.5
    b = torch.randn(n_adapters, rank, dout, device=DEV, dtype=dtype, generator=g) / rank**0.5
    S = T // seg_len
    indptr = torch.arange(0, T + 1, seg_len, dtype=torch.int64)
    seg = torch.arange(S, dtype=torch.int64) % n_adapters
    rk = torch.full((n_adapters,), rank, dtype=torch.int64)
    sc = torch.ones(n_adapters)
    h = ops.lora_shrink(x, a, indptr, seg, rk)

    def ref_shrink():  # torch reference: one bmm over per-token gathered adapters
        return torch.bmm(x.view(S, seg_len, din), a[seg.to(DEV)].transpose(1, 2))

    def ref_expand():
        return y + torch.bmm(h.view(S, seg_len, rank), b[seg.to(DEV)]).view(T, dout)

    esz = x.element_size()
    ms = timeit(lambda: ops.lora_shrink(x, a, indptr, seg, rk))
    rms = timeit(ref_shrink)
    byts = (T * din + min(S, n_adapters) * rank * din + T * rank) * esz
    flops = 2 * T * din * rank
    add(f"lora_shrink {name}", ms, rms, flops=flops if seg_len >= 64 else None, nbytes=byts, dtype=dtype)
    ms = timeit(lambda: ops.lora_expand(y, h, b, indptr, seg, rk, sc))
    rms = timeit(ref_expand)
    byts = (2 * T * dout + min(S, n_adapters) * rank * dout + T * rank) * esz
    add(f"lora_expand {name}", ms, rms, flops=2 * T * dout * rank if seg_len >= 64 else None, nbytes=byts, dtype=dtype)
    if seg_len >= 64:
        gy = torch.randn_like(y)
        ms = timeit(lambda: ops.lora_expand_backward(gy, h, b, indptr, seg, rk, sc))
        bs = b[seg.to(DEV)]  # [S, rank, dout]

        def ref_backward():  # dh = gy @ B^T and dB = h^T @ gy per segment (as two bmm)
            g3 = gy.view(S, seg_len, dout)
            return torch.bmm(g3, bs.transpose(1, 2)), torch.bmm(h.view(S, seg_len, rank).transpose(1, 2), g3)

        rms = timeit(ref_backward)
        add(f"lora_expand_bwd {name}", ms, rms, flops=4 * T * dout * rank, dtype=dtype)


def bench_adam():
    shapes = [(16, 4096)] * 224 + [(4096, 16)] * 224  # ~29M params: r16 LoRA on a 7B-ish model
    params = [torch.randn(s, device=DEV) for s in shapes]
    grads = [torch.randn(s, device=DEV) for s in shapes]
    m = [torch.zeros(s, device=DEV) for s in shapes]
    v = [torch.zeros(s, device=DEV) for s in shapes]
    steps = torch.zeros(len(shapes), dtype=torch.int64)
    gid = torch.zeros(len(shapes), dtype=torch.int64)
    hp = torch.tensor([[1e-4, 0.9, 0.95, 1e-12, 0.0, 0.0]], dtype=torch.float64)
    ms = timeit(lambda: fused_adamw(params, grads, m, v, steps, gid, hp))
    ref_p = [p.clone().requires_grad_() for p in params]
    for p, g in zip(ref_p, grads):
        p.grad = g
    opt = torch.optim.AdamW(ref_p, lr=1e-4, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.0, fused=True)
    rms = timeit(opt.step)
    n = sum(p.numel() for p in params)
    add(f"adamw_ fp32 {len(shapes)} tensors {n / 1e6:.0f}M", ms, rms, nbytes=n * 4 * 7, ref_name="torch fused")


def bench_sample():
    try:
        import flashinfer  # type: ignore
    except Exception:  # noqa: BLE001
        flashinfer = None
    for B, V in ((1, 152064), (64, 152064), (256, 128256)):
        logits = torch.randn(B, V, device=DEV, dtype=torch.float32) * 4
        args = [logits, torch.full((B,), 0.8, device=DEV), torch.full((B,), 50, dtype=torch.int64, device=DEV),
                torch.full((B,), 0.9, device=DEV), torch.arange(B, device=DEV), torch.zeros(B, dtype=torch.int64, device=DEV),
                torch.zeros(B, dtype=torch.int64, device=DEV)]
        ms = timeit(lambda: ops.sample(*args))

        def ref():  # torch: full sort + cumsum + multinomial
            probs = torch.softmax(logits / 0.8, -1)
            sp, si = probs.sort(-1, descending=True)
            cs = sp.cumsum(-1)
            sp[(cs - sp) > 0.9] = 0
            sp[:, 50:] = 0
            return si.gather(-1, torch.multinomial(sp, 1))

        rms = timeit(ref)
        add(f"sample top50/p0.9 B={B} V={V}", ms, rms, nbytes=B * V * 4)
        if flashinfer is not None:
            try:
                probs = torch.softmax(logits / 0.8, -1)
                fms = timeit(lambda: flashinfer.sampling.top_k_top_p_sampling_from_probs(probs, 50, 0.9))
                add(f"  vs flashinfer B={B} V={V}", ms, fms, nbytes=B * V * 4, ref_name="flashinfer")
            except Exception as exc:  # noqa: BLE001
                print(f"flashinfer comparison failed: {exc}")


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    sections = [
        lambda: lora_case("decode 64x1tok r16 4096->4096", 64, 1, 64, 16, 4096, 4096),
        lambda: lora_case("prefill 4x1024tok r16 4096->11008", 4096, 1024, 4, 16, 4096, 11008),
        lambda: lora_case("train 8x512tok r64 3424->2049", 4096, 512, 8, 64, 3424, 2049),
        bench_adam,
        bench_sample,
    ]
    for section in sections:  # one failing section must not hide the others' figures
        try:
            section()
        except Exception as exc:  # noqa: BLE001
            print(f"benchmark section failed: {type(exc).__name__}: {exc}")
    print(f"\n{'op':50s} {'ms':>9s} {'achieved':>17s} {'% peak':>7s} {'ref/mint':>9s}  ref")
    for name, ms, rate, pct, ratio, ref_name in ROWS:
        print(f"{name:50s} {ms:9.4f} {rate:>17s} {pct:6.1f}% {ratio:9.2f}  {ref_name}")


if __name__ == "__main__":
    main()
