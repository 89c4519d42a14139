"""Tracking over HTTP: the open pixel (`/o/<token>`), click redirects (`/c/<token>`) and the Amazon SES / SNS
feedback webhook (`/webhooks/ses`).

- The pixel always answers the 43-byte GIF with `Cache-Control: no-store` (so each open reaches us), even for a
  forged token (counted in a metric): a broken image in a mail client helps no one. It is served by a tiny ASGI
  fast path placed in front of the API's middleware, because it is the hottest endpoint (bench/tracking.py).
- A click redirects (302) only to a URL of the campaign's own link table, found by the index the signed token
  carries: never an open redirect. Anything else gets a 404 page and a metric, never an exception.
- HEAD requests, known scanners and reactions within seconds of the hand-off are recorded as machine activity.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from tracking import link_table
from tracking.engagement import Hit, HitBuffer
from tracking.feedback import FeedbackRecorder
from tracking.machine import MachineRules, request_reason
from tracking.metrics import BAD_TOKENS, HITS
from tracking.mx_providers import MxProviders
from tracking.sns import SnsError, SnsVerifier, ses_results
from tracking.tokens import TrackingTokens

log = logging.getLogger(__name__)

# The smallest transparent 1×1 GIF89a: 43 bytes.
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
GIF_HEADERS = [(b"content-type", b"image/gif"), (b"content-length", str(len(GIF)).encode()),
               (b"cache-control", b"no-store, no-cache, must-revalidate, private"), (b"pragma", b"no-cache")]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NOT_FOUND = """<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Lien introuvable</title></head>
<body><main><h1>Lien introuvable</h1><p>Ce lien n'est pas valide ou a expiré.</p>
<p lang="en">This link is not valid or has expired.</p></main></body></html>"""


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def safe_redirect_target(url: str) -> bool:
    """Defence in depth: the link table only holds http(s) URLs taken from our own rendered HTML."""
    if any(c in url for c in "\r\n\t\x00 ") or len(url) > 8000:
        return False
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest) and not rest.startswith("/")


class Tracking:
    def __init__(self, engine: Engine, redis: Redis, keys: list[str] | tuple[str, ...],
                 feedback: FeedbackRecorder, sns: SnsVerifier, rules: MachineRules = MachineRules(),
                 mx: MxProviders | None = None) -> None:
        self.engine = engine
        self.mx = mx  # provider grouping of the statistics from MX hosts (opt-in per request: DNS lookups)
        self.tokens = TrackingTokens(keys)
        self.rules = rules
        self.hits = HitBuffer(redis)
        self.feedback = feedback
        self.sns = sns
        self._urls: dict[tuple[int, int], str] = {}
        self.router = self._build_router()

    def start(self) -> None:
        self.hits.start()

    async def aclose(self) -> None:
        await self.hits.close()

    # -- the pixel (served by `PixelFastPath`) ----------------------------------------------------------------
    async def pixel(self, scope: Scope, send: Send) -> None:
        token = scope["path"][3:]
        claims = self.tokens.verify_open(token) if len(token) < 200 else None
        if claims is None:
            BAD_TOKENS.labels("open").inc()
        else:
            client = scope.get("client")
            machine = request_reason(scope["method"], _header(scope, b"user-agent"), client[0] if client else "",
                                     self.rules)
            self.hits.add(Hit(False, claims.account_id, claims.message_id, claims.campaign_id, time.time(),
                                  machine))
            HITS.labels("open", "yes" if machine else "no").inc()
            await self.hits.backpressure()
        await send({"type": "http.response.start", "status": 200, "headers": GIF_HEADERS})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else GIF})

    # -- clicks and the SES webhook ---------------------------------------------------------------------------
    def _build_router(self) -> APIRouter:
        router = APIRouter(tags=["tracking"])

        @router.api_route("/c/{token}", methods=["GET", "HEAD"], include_in_schema=False)
        async def click(token: str, request: Request) -> Response:
            claims = self.tokens.verify_click(token) if len(token) < 200 else None
            url = await self._url(claims.campaign_id, claims.link_index) if claims else None
            if claims is None or url is None or not safe_redirect_target(url):
                BAD_TOKENS.labels("click").inc()
                return HTMLResponse(_NOT_FOUND, status_code=404, headers={"Cache-Control": "no-store"})
            machine = request_reason(request.method, request.headers.get("user-agent", ""),
                                     request.client.host if request.client else "", self.rules)
            self.hits.add(Hit(True, claims.account_id, claims.message_id, claims.campaign_id, time.time(),
                                  machine, claims.link_index))
            HITS.labels("click", "yes" if machine else "no").inc()
            await self.hits.backpressure()
            return Response(status_code=302, headers={"Location": url, "Cache-Control": "no-store",
                                                      "Referrer-Policy": "no-referrer"})

        @router.post("/webhooks/ses", tags=["feedback"], summary="Amazon SES bounce/complaint notifications (SNS)")
        async def ses(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return _problem(400, "validation", "Body is not an SNS JSON message")
            try:
                await self.sns.verify(body)
            except SnsError as exc:
                log.warning("SNS message refused: %s", exc)
                return _problem(403, "forbidden", "SNS signature not verified")
            if body["Type"] == "SubscriptionConfirmation":
                return await self._confirm(str(body.get("SubscribeURL") or ""))
            recorded = 0
            if body["Type"] == "Notification":
                for result in ses_results(str(body.get("Message") or "")):
                    outcome = await self.feedback.record(result, "ses")
                    recorded += 1 if outcome.message_id and not outcome.duplicate else 0
            return JSONResponse({"status": "ok", "recorded": recorded})

        return router

    async def _confirm(self, url: str) -> Response:
        if not self.sns.trusted_url(url):
            return _problem(403, "forbidden", "SubscribeURL not trusted")
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                (await client.get(url)).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("SNS subscription confirmation failed: %s", exc)
            return _problem(502, "upstream", "SNS subscription confirmation failed")
        return JSONResponse({"status": "confirmed"})

    async def _url(self, campaign_id: int, idx: int) -> str | None:
        key = (campaign_id, idx)
        url = self._urls.get(key)
        if url is None:
            def load() -> str | None:
                with self.engine.connect() as conn:
                    return link_table.url_at(conn, campaign_id, idx)

            url = await asyncio.to_thread(load)
            if url is not None:
                if len(self._urls) > 100_000:
                    self._urls.clear()
                self._urls[key] = url
        return url


class PixelFastPath:
    """ASGI middleware, outermost: `GET|HEAD /o/<token>` is answered by `app.state.tracking` before the API's
    middleware and routing run (the hottest endpoint; see bench/tracking.py). Everything else passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/o/") and scope["method"] in ("GET", "HEAD"):
            tracking = getattr(getattr(scope.get("app"), "state", None), "tracking", None)
            if isinstance(tracking, Tracking):
                await tracking.pixel(scope, send)
                return
        await self.app(scope, receive, send)


def _problem(status: int, kind: str, title: str) -> JSONResponse:
    return JSONResponse({"type": f"https://envoi.dev/problems/{kind}", "title": title, "status": status},
                        status_code=status, media_type="application/problem+json")
