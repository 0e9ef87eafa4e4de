"""``python -m mint.cluster --workers N --port PORT --base-model NAME``: N mint serve workers + the router."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mint.cluster", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1", help="router address (workers always listen on loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--base-model", action="append", default=None)
    parser.add_argument("--keys-file", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    args = parser.parse_args(argv)

    import os

    import uvicorn

    from mint.cluster.launch import Cluster
    from mint.server.auth import load_keys
    from mint.server.config import is_loopback

    if not is_loopback(args.host) and not load_keys(os.environ.get("MINT_API_KEYS"), args.keys_file):
        parser.error(f"refusing to listen on {args.host} without API keys (set MINT_API_KEYS or --keys-file)")
    from mint.cluster.router import create_router_app
    from mint.engine.models import DEFAULT_BASE_MODEL

    with Cluster(args.workers, args.base_model or [DEFAULT_BASE_MODEL], args.threads, args.keys_file) as cluster:
        uvicorn.run(create_router_app(cluster.urls), host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
