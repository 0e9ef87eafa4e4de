"""Run every CPU benchmark and print its tables: ``python -m bench.run_all`` (add --full for the whole grid,
--keep-freed-memory to run every table with glibc keeping freed memory, see bench.common.keep_freed_memory)."""

from __future__ import annotations

import sys

from bench import adam, lora_ops, sampling
from bench.common import keep_freed_memory


def main() -> None:
    full = ["--full"] if "--full" in sys.argv else []
    if "--keep-freed-memory" in sys.argv and not keep_freed_memory():
        sys.exit("--keep-freed-memory needs glibc")
    lora_ops.main(full)
    lora_ops.main(full + ["--dtype", "bfloat16"])
    adam.main([])
    sampling.main(full)
    sampling.main(full + ["--dtype", "bfloat16"])


if __name__ == "__main__":
    main()
