"""The FastAPI application of ``mint serve``."""

from __future__ import annotations

from fastapi import FastAPI, Request

from mint.server import deps, errors
from mint.server.config import ServerConfig
from mint.server.limits import BodyLimitMiddleware
from mint.server.routes import runs, sampling, service, training, weights
from mint.server.state import ServerState


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """An app serving the Tinker REST protocol over mint's in-process engines.

    ``config.base_models`` lists what may be trained and sampled (default: the embedded SmolLM2); models
    load on first use. ``app.state.mint`` is the :class:`ServerState`.
    """
    config = config or ServerConfig.from_env()
    app = FastAPI(title="mint", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.mint = ServerState(config)
    errors.install(app)

    @app.exception_handler(deps.Unauthorized)
    async def _unauthorized(request: Request, exc: deps.Unauthorized):
        return deps.unauthorized_response(exc)

    for module in (service, training, weights, sampling, runs):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    return app
