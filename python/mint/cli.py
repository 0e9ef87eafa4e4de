"""The ``mint`` command: ``mint info``, ``mint prepare [BASE_MODEL]``, ``mint export PATH OUT_DIR`` and ``mint serve``."""

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
    export = sub.add_parser("export", help="write a checkpoint as a PEFT adapter folder (or a merged model)")
    export.add_argument("path", help="checkpoint path, e.g. mint://<run_id>/sampler_weights/<name>")
    export.add_argument("out_dir", help="output folder (created; existing files of the same names are replaced)")
    export.add_argument("--merged", action="store_true", help="write a full model with the adapter merged in")
    export.add_argument("--base-model", default=None, help="base model to merge into (default: the checkpoint's)")
    serve = sub.add_parser("serve", help="serve the Tinker REST protocol over HTTP (see README: Server)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--keys-file", default=None, help="API keys, one 'KEY' or 'NAME:KEY' per line")
    serve.add_argument("--base-model", action="append", default=None,
                       help="a base model (name or local folder) clients may use; repeatable; default: the embedded one")
    serve.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted (MiB)")
    args = parser.parse_args(argv)

    if args.command == "export":
        return _export(args)
    if args.command == "serve":
        return _serve(args)

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


def _serve(args: argparse.Namespace) -> int:
    from mint.server import ServerConfig, serve

    config = ServerConfig.from_env(
        base_models=args.base_model, keys_file=args.keys_file, max_body_bytes=int(args.max_body_mb * 1024 * 1024)
    )
    serve(args.host, args.port, config)
    return 0


def _export(args: argparse.Namespace) -> int:
    from mint import export
    from mint.errors import MintError

    try:
        if args.merged:
            out = export.to_merged(args.path, args.out_dir, base_model=args.base_model)
        else:
            out = export.to_peft(args.path, args.out_dir)
    except MintError as exc:
        print(f"mint export: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
