"""Peak resident memory with K adapters resident on one base model (SmolLM2-135M, fp32, CPU).

    python -m bench.memory [--ks 1 4 16] [--rank 16]

Each K runs in a fresh process: load the base model, create K training clients, run one forward_backward and
optim_step on each, then report the peak RSS. The growth per adapter should be the adapter, its gradients and
its Adam moments, nothing that scales with the base model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import resource, sys, torch, mint
from mint import types
k, rank = int(sys.argv[1]), int(sys.argv[2])
service = mint.ServiceClient()
sampler = service.create_sampling_client(base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
datum = types.Datum(model_input=types.ModelInput.from_ints(list(range(100, 132))),
                    loss_fn_inputs={"target_tokens": list(range(101, 133))})
clients = [service.create_lora_training_client(rank=rank, seed=i) for i in range(k)]
for c in clients:
    c.forward_backward([datum]).result()
    c.optim_step(types.AdamParams()).result()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
params = sum(v.numel() for _, v in clients[0]._engine.pool.parameters(clients[0]._engine.adapter(clients[0].model_id).slot))
print(f"{base_rss:.0f} {peak:.0f} {params}")
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args(argv)
    rows = []
    for k in args.ks:
        out = subprocess.run([sys.executable, "-c", CHILD, str(k), str(args.rank)], capture_output=True, text=True,
                             check=True).stdout.split()
        base, peak, params = float(out[-3]), float(out[-2]), int(out[-1])
        rows.append((k, base, peak, params))
    print(f"peak RSS, SmolLM2-135M fp32 base + K LoRA adapters (rank {args.rank}, attention + MLP + unembedding)")
    print(f"{'K':>4}{'base loaded MiB':>18}{'peak MiB':>11}{'per adapter MiB':>17}{'adapter params':>16}")
    k0, _, p0, _ = rows[0]
    for k, base, peak, params in rows:
        per = (peak - p0) / (k - k0) if k != k0 else float("nan")
        print(f"{k:>4}{base:>18.0f}{peak:>11.0f}{per:>17.1f}{params:>16,}")
    print("(adapter weights + grads + 2 Adam moments in fp32 = 16 bytes per adapter parameter)")


if __name__ == "__main__":
    main()
