"""The double opt-in confirmation page: `GET /optin/{token}` shows a button (a GET never records anything: mail
scanners prefetch links), `POST /optin/{token}` records the confirmation in the consent ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Engine

from crm import double_opt_in
from unsubscribe.i18n import TEXT, pick_language
from unsubscribe.tokens import PURPOSE_CONFIRM, LinkClaims, LinkSigner, TokenError

Render = Callable[..., HTMLResponse]


def add_optin_routes(router: APIRouter, engine: Engine, signer: LinkSigner, render: Render,
                     sender_of: Callable[[int], dict[str, Any]]) -> None:
    def claims(token: str) -> LinkClaims | None:
        try:
            return signer.verify(token, PURPOSE_CONFIRM)
        except TokenError:
            return None

    def lang_of(request: Request) -> str:
        return pick_language(request.query_params.get("lang"), request.headers.get("accept-language", ""))

    def invalid(lang: str) -> HTMLResponse:
        t = TEXT[lang]
        return render("message.html", lang, 404, title=t["invalid_title"], heading=t["invalid_title"],
                      message=t["invalid"])

    def pending(c: LinkClaims) -> bool:
        with engine.connect() as conn:
            return double_opt_in.pending_grant(conn, c.account_id, c.contact_id, c.message_id)

    @router.get("/optin/{token}", response_class=HTMLResponse)
    async def confirm_page(token: str, request: Request) -> Response:
        lang = lang_of(request)
        c = claims(token)
        if c is None or not await asyncio.to_thread(pending, c):
            return invalid(lang)
        ctx = await asyncio.to_thread(sender_of, c.account_id)
        return render("confirm.html", lang, title=TEXT[lang]["optin_title"], action=f"/optin/{token}?lang={lang}",
                      page_url=f"/optin/{token}", **ctx)

    @router.post("/optin/{token}", response_class=HTMLResponse)
    async def confirm(token: str, request: Request) -> Response:
        lang = lang_of(request)
        c = claims(token)
        if c is None:
            return invalid(lang)
        ip = request.client.host if request.client else None
        agent = request.headers.get("user-agent")

        def write() -> bool | None:
            with engine.begin() as conn:
                return double_opt_in.confirm(conn, c.account_id, c.contact_id, c.message_id, ip, agent)

        done = await asyncio.to_thread(write)
        if done is None:
            return invalid(lang)
        ctx = await asyncio.to_thread(sender_of, c.account_id)
        t = TEXT[lang]
        message = t["optin_done"].format(sender=ctx["sender"]) if done else t["optin_already"]
        return render("message.html", lang, title=t["optin_title"], heading=t["optin_title"], message=message,
                      page_url=f"/optin/{token}", **ctx)
