"""The HTTP application: the CRM's API, the unsubscribe endpoint, /metrics, health."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from envoi.composition import (
    twilio_router,  # issue 6
    unsubscribe_router,  # issue 5
)
from envoi.http import (  # routes_tracking: issue 4
    problems,
    routes_account,
    routes_contacts,
    routes_domains,
    routes_send,
    routes_sms,
    routes_tracking,
)
from envoi.http.deps import Services
from envoi.http.limits import BodyLimit
from envoi.http.routes_guardrails import admin_router as guardrails_admin  # issue 3
from envoi.http.routes_guardrails import router as guardrails_router  # issue 3
from envoi.http.routes_privacy import admin_router as privacy_admin  # issue 5
from envoi.http.routes_privacy import router as privacy_router  # issue 5
from envoi.metrics import API_REQUESTS
from envoi.settings import Settings
from envoi.tracking_wiring import tracking_service  # issue 4
from tracking.web import PixelFastPath  # issue 4


def create_app(settings: Settings, services_factory: Any) -> FastAPI:
    """`services_factory` is an async context manager yielding `Services` (built by the composition root)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with services_factory() as svc:
            app.state.services = svc
            app.include_router(unsubscribe_router(settings, svc))  # issue 5: page, one-click, undo
            # issue 6: Twilio status callbacks and inbound SMS, signatures checked against the public URL
            # (+ the 3-failure rule of numbers, the failure-rate counters, the unsubscribe fence for STOP)
            app.include_router(twilio_router(settings, svc.engine, svc.redis))
            tracking = tracking_service(settings, svc.engine, svc.redis)  # issue 4: pixel, clicks, SES webhook
            app.state.tracking = tracking
            app.include_router(tracking.router)
            tracking.start()
            try:
                yield
            finally:
                await tracking.aclose()  # flush the buffered opens and clicks

    app = FastAPI(title="Envoi", version="0.1.0", lifespan=lifespan, responses=problems.PROBLEM_RESPONSES,
                  dependencies=[Depends(problems.check_path_ids)],
                  description="Bulk email and SMS sending engine with deliverability guardrails.")
    problems.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.fix_problem_media_types(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # issue 3 (before routes_contacts: /v1/suppressions/disabled must not be taken for a path parameter)
    app.include_router(guardrails_router)
    app.include_router(guardrails_admin)
    app.include_router(routes_account.router)
    app.include_router(privacy_router)  # issue 5 (before routes_contacts: /contacts/{id}/export)
    app.include_router(privacy_admin)  # issue 5
    app.include_router(routes_contacts.router)
    app.include_router(routes_tracking.router)  # issue 4 (before routes_send: /stats/domains)
    app.include_router(routes_send.router)
    app.include_router(routes_domains.router)  # issue 7: sending domains, DKIM keys, verification
    app.include_router(routes_sms.router)  # issue 6: SMS settings, single SMS

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
    app.add_middleware(PixelFastPath)  # issue 4: outermost, the open pixel skips the API's middleware
    return app
