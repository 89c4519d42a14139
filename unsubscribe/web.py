"""The unsubscribe endpoint behind every `List-Unsubscribe` URL and visible "Se désinscrire" link.

- `GET /u/{token}` shows the page and never changes anything (link scanners and mail clients prefetch).
- `POST /u/{token}` with `List-Unsubscribe=One-Click` (RFC 8058 §3.2, urlencoded or multipart): unsubscribes at
  once, answers 200 with a tiny body: no redirect, no cookie, no login; idempotent.
- `POST /u/{token}` from the page's form: unsubscribes with the chosen scope, shows the confirmation and undo.
- `POST /u/{token}/undo`: re-subscribes exactly what that action suppressed.
A forged or altered token gets a 404 and changes nothing. The page needs no JavaScript and sets no cookie; the
language comes from `?lang=` or `Accept-Language`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm import accounts as account_repo
from crm import unsubscribes
from crm.schema import contacts, lists, messages
from unsubscribe.i18n import LANGUAGE_NAMES, SUPPORTED, TEXT, mask, pick_language
from unsubscribe.optin import add_optin_routes
from unsubscribe.service import UnsubscribeService
from unsubscribe.tokens import PURPOSE_UNSUBSCRIBE, LinkClaims, LinkSigner, TokenError

log = logging.getLogger(__name__)

_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]), auto_reload=False)

# The token is in the URL: never leak it through Referer, never cache, never frame (clickjacking).
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}
_SCOPES = {s.value: s for s in unsubscribes.Scope}


def _request_for(c: LinkClaims, scope: unsubscribes.Scope, source: str) -> unsubscribes.Request:
    return unsubscribes.Request(c.account_id, c.contact_id, c.message_id, c.campaign_id, scope, source)


def build_router(engine: Engine, signer: LinkSigner, service: UnsubscribeService) -> APIRouter:
    router = APIRouter(tags=["unsubscribe"])

    def claims(token: str) -> LinkClaims | None:
        try:
            return signer.verify(token, PURPOSE_UNSUBSCRIBE)
        except TokenError:
            return None

    def sender_of(account_id: int) -> dict[str, Any]:
        """The sender named on every page: the legal name of the sender profile (contract, Annex 1)."""
        with engine.connect() as conn:
            profile = account_repo.get_sender_profile(conn, account_id)
            account = account_repo.get_account(conn, account_id)
        sender = (profile.legal_name if profile and profile.legal_name else account.name if account else "")
        return {"sender": sender, "postal_address": profile.postal_address if profile else ""}

    def context(c: LinkClaims) -> dict[str, Any]:
        """What the page shows: the sender (legal name), the masked address, the list of the campaign."""
        with engine.connect() as conn:
            address = None
            if c.contact_id:
                address = conn.execute(select(contacts.c.email).where(
                    contacts.c.account_id == c.account_id, contacts.c.id == c.contact_id)).scalar()
            if address is None and c.message_id:
                address = conn.execute(select(messages.c.recipient).where(
                    messages.c.account_id == c.account_id, messages.c.id == c.message_id)).scalar()
            list_id = unsubscribes.list_of_campaign(conn, c.account_id, c.campaign_id)
            list_name = conn.execute(select(lists.c.name).where(lists.c.id == list_id)).scalar() \
                if list_id is not None and c.contact_id else None
        return {**sender_of(c.account_id), "address": mask(address) if address else "", "list_name": list_name}

    def render(name: str, lang: str, status: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("sender", "")
        values.setdefault("page_url", "")  # the language switch always leads to the page itself (a GET)
        html = _TEMPLATES.get_template(name).render(
            lang=lang, t=TEXT[lang], languages=[(code, LANGUAGE_NAMES[code]) for code in SUPPORTED], **values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def lang_of(request: Request) -> str:
        return pick_language(request.query_params.get("lang"), request.headers.get("accept-language", ""))

    def invalid(lang: str) -> HTMLResponse:
        t = TEXT[lang]
        return render("message.html", lang, 404, title=t["invalid_title"], heading=t["invalid_title"],
                      message=t["invalid"])

    def unavailable(lang: str) -> HTMLResponse:
        t = TEXT[lang]
        response = render("message.html", lang, 503, title=t["title"], heading=t["title"], message=t["unavailable"])
        response.headers["Retry-After"] = "30"
        return response

    @router.get("/u/{token}", response_class=HTMLResponse)
    async def page(token: str, request: Request) -> Response:
        lang = lang_of(request)
        c = claims(token)
        if c is None:
            return invalid(lang)
        ctx = await asyncio.to_thread(context, c)
        return render("page.html", lang, title=TEXT[lang]["title"], action=f"/u/{token}?lang={lang}",
                      page_url=f"/u/{token}", **ctx)

    @router.post("/u/{token}")
    async def post(token: str, request: Request) -> Response:
        lang = lang_of(request)
        c = claims(token)
        if c is None:
            # Forged, altered or retired token: nothing is read from the body, nothing changes.
            return PlainTextResponse("invalid unsubscribe link\n", status_code=404, headers=_HEADERS)
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        scope = unsubscribes.Scope.ACCOUNT if one_click else _SCOPES.get(str(form.get("scope", "account")),
                                                                         unsubscribes.Scope.ACCOUNT)
        try:
            applied = await service.unsubscribe(_request_for(c, scope, "one-click" if one_click else "page"))
        except Exception:
            log.exception("unsubscribe failed")
            if one_click:
                return PlainTextResponse("try again later\n", status_code=503, headers={"Retry-After": "30"})
            return unavailable(lang)
        if one_click:
            # RFC 8058 §3.2: the POST itself unsubscribes; a tiny 200, no redirect, no page.
            return PlainTextResponse("unsubscribed\n", status_code=200, headers=_HEADERS)
        ctx = await asyncio.to_thread(context, c)
        t = TEXT[lang]
        key = {"account": "done_account", "list": "done_list", "all_channels": "done_all"}[scope.value]
        message = t[key].format(sender=ctx["sender"], list=ctx["list_name"] or "")
        if applied.action_id is None:
            message = f"{message} {t['already']}"
        return render("done.html", lang, title=t["done_title"], message=message, action_id=applied.action_id,
                      undo_action=f"/u/{token}/undo?lang={lang}", page_url=f"/u/{token}", **ctx)

    @router.post("/u/{token}/undo")
    async def undo(token: str, request: Request) -> Response:
        lang = lang_of(request)
        c = claims(token)
        if c is None:
            return invalid(lang)
        form = await request.form()
        try:
            action_id = int(str(form.get("action", "")))
        except ValueError:
            action_id = 0
        try:
            undone = await service.undo(_request_for(c, unsubscribes.Scope.ACCOUNT, "page"), action_id)
        except Exception:
            log.exception("undo failed")
            return unavailable(lang)
        ctx = await asyncio.to_thread(context, c)
        t = TEXT[lang]
        if undone is None:
            return render("message.html", lang, 404, title=t["undone_title"], heading=t["undone_title"],
                          message=t["undo_gone"], page_url=f"/u/{token}", **ctx)
        return render("message.html", lang, title=t["undone_title"], heading=t["undone_title"],
                      message=t["undone"].format(sender=ctx["sender"]), page_url=f"/u/{token}", **ctx)

    add_optin_routes(router, engine, signer, render, sender_of)  # double opt-in confirmation (same page kit)
    return router
