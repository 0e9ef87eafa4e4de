"""Run every CPU benchmark and print its tables: ``python -m bench.run_all`` (add --full for the whole grid)."""

from __future__ import annotations

import sys

from bench import adam, lora_ops, sampling


def main() -> None:
    full = ["--full"] if "--full" in sys.argv else []
    lora_ops.main(full)
    lora_ops.main(full + ["--dtype", "bfloat16"])
    adam.main([])
    sampling.main(full)
    sampling.main(full + ["--dtype", "bfloat16"])


if __name__ == "__main__":
    main()
