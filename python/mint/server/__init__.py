"""``mint serve``: mint's engines behind the Tinker REST protocol, for many users with API keys.

``create_app(ServerConfig(...))`` builds the FastAPI app; ``serve(...)`` runs it with uvicorn. See the
README's "Server" section for what the protocol subset covers.
"""

from __future__ import annotations

from mint.server.app import create_app
from mint.server.config import ServerConfig, is_loopback


def serve(host: str = "127.0.0.1", port: int = 8000, config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Run the server until interrupted. Refuses a non-loopback ``host`` when no API keys are configured."""
    import uvicorn

    config = config or ServerConfig.from_env()
    if not config.keys and not is_loopback(host):
        raise SystemExit(
            f"mint serve: refusing to listen on {host} without API keys; set MINT_API_KEYS or --keys-file "
            "(without keys only loopback addresses are allowed)"
        )
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["ServerConfig", "create_app", "serve"]
