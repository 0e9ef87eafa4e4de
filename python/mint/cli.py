"""The ``mint`` command: ``mint info`` and ``mint prepare [BASE_MODEL]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mint`` console script."""
    parser = argparse.ArgumentParser(prog="mint", description="mint: multi-adapter LoRA post-training")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, build and data directory")
    prepare = sub.add_parser("prepare", help="convert/cache a base model so later starts take seconds")
    prepare.add_argument("base_model", nargs="?", default=None)
    args = parser.parse_args(argv)

    import torch

    import mint
    from mint import _build_info
    from mint.engine.models import DEFAULT_BASE_MODEL, embedded_model_names, resolve_model_source
    from mint.home import mint_home

    if args.command == "info":
        print(f"mint {mint.__version__}")
        print(f"torch {torch.__version__} (mint built against {_build_info.TORCH_VERSION}, cuda kernels: "
              f"{'yes' if _build_info.WITH_CUDA else 'no'})")
        print(f"data directory: {mint_home()}")
        print(f"embedded base models: {', '.join(embedded_model_names())}")
        ops = sorted({s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("mint::")})
        print(f"ops: {', '.join(ops)}")
    elif args.command == "prepare":
        print(resolve_model_source(args.base_model or DEFAULT_BASE_MODEL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
