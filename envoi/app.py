"""The HTTP application: the CRM's API, the unsubscribe endpoint, /metrics, health."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from envoi.http import problems, routes_account, routes_contacts, routes_domains, routes_send
from envoi.http.deps import Services
from envoi.http.limits import BodyLimit
from envoi.metrics import API_REQUESTS
from envoi.settings import Settings
from unsubscribe.web import build_router


def create_app(settings: Settings, services_factory: Any) -> FastAPI:
    """`services_factory` is an async context manager yielding `Services` (built by the composition root)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services_factory() as svc:
            app.state.services = svc
            app.include_router(build_router(svc.engine, settings.signing_keys))
            yield

    app = FastAPI(title="Envoi", version="0.1.0", lifespan=lifespan,
                  description="Bulk email and SMS sending engine with deliverability guardrails.")
    problems.install(app)
    app.include_router(routes_account.router)
    app.include_router(routes_contacts.router)
    app.include_router(routes_send.router)
    app.include_router(routes_domains.router)  # issue 7: sending domains, DKIM keys, verification

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        API_REQUESTS.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "time": time.time()}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        svc: Services = request.app.state.services
        try:
            await svc.redis.ping()
            with svc.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return Response(f'{{"status":"unavailable","detail":"{type(exc).__name__}"}}', status_code=503,
                            media_type="application/json")
        return Response('{"status":"ready"}', media_type="application/json")

    app.add_middleware(BodyLimit, default=settings.max_body_bytes,
                       overrides={"/contacts/import": settings.max_import_bytes})
    return app
