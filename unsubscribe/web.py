"""The unsubscribe endpoint behind every `List-Unsubscribe` URL and visible "Se désinscrire" link.

- GET shows a page and never unsubscribes by itself (link scanners prefetch).
- POST unsubscribes at once: RFC 8058 one-click (`List-Unsubscribe=One-Click`, urlencoded or multipart) or the
  page's own form. No cookie, no login, no redirect; idempotent.
The suppression is written to the ledger before the response returns; the dispatcher checks it just before
every hand-off. (Issue 5 extends this page: undo, list-only / all-channels options.)
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from sqlalchemy.engine import Engine

from crm import accounts as account_repo
from crm import contacts as contact_repo
from crm import ledger
from crm.domain import Channel, SuppressionReason
from unsubscribe.tokens import PURPOSE_UNSUBSCRIBE, LinkClaims, LinkSigner, TokenError

_TEXT = {
    "fr": {"title": "Se désinscrire", "ask": "Ne plus recevoir les e-mails de {sender} ?",
           "button": "Me désinscrire", "done": "C'est fait : vous ne recevrez plus d'e-mails de {sender}.",
           "invalid": "Ce lien de désinscription n'est pas valide."},
    "en": {"title": "Unsubscribe", "ask": "Stop receiving emails from {sender}?",
           "button": "Unsubscribe", "done": "Done: you will receive no more emails from {sender}.",
           "invalid": "This unsubscribe link is not valid."},
}


def _lang(request: Request) -> str:
    explicit = request.query_params.get("lang")
    if explicit in _TEXT:
        return explicit
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in _TEXT:
            return code
    return "fr"


def _page(lang: str, title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = f"""<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#111}}
button{{font-size:1rem;padding:.7rem 1.2rem;background:#0b57d0;color:#fff;border:0;border-radius:6px}}
button:focus{{outline:3px solid #111;outline-offset:2px}}</style></head>
<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"""
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})


def build_router(engine: Engine, keys: Sequence[str], on_suppressed: Callable[[LinkClaims, str], None] | None = None
                 ) -> APIRouter:
    router = APIRouter(tags=["unsubscribe"], include_in_schema=True)
    signer = LinkSigner(keys)

    def claims(token: str) -> LinkClaims | None:
        try:
            return signer.verify(token, PURPOSE_UNSUBSCRIBE)
        except TokenError:
            return None

    def sender_name(account_id: int) -> str:
        with engine.connect() as conn:
            profile = account_repo.get_sender_profile(conn, account_id)
            account = account_repo.get_account(conn, account_id)
        if profile and profile.legal_name:
            return profile.legal_name
        return account.name if account else ""

    def unsubscribe(c: LinkClaims, source: str) -> None:
        with engine.begin() as conn:
            contact = contact_repo.get_contact(conn, c.account_id, c.contact_id) if c.contact_id else None
            address = contact["email"] if contact else None
            if address is None and c.message_id:
                message = ledger.get_message(conn, c.account_id, c.message_id)
                address = message["recipient"] if message else None
            if not address:
                return
            added = ledger.add_suppression(conn, c.account_id, Channel.EMAIL, address, SuppressionReason.UNSUBSCRIBED,
                                           source, campaign_id=c.campaign_id or None, message_id=c.message_id or None)
            if added:
                account_repo.audit(conn, c.account_id, "recipient", "contact.unsubscribed",
                                   {"contact_id": c.contact_id, "campaign_id": c.campaign_id, "source": source})
        if on_suppressed is not None:
            on_suppressed(c, address)

    @router.get("/u/{token}", response_class=HTMLResponse)
    def page(token: str, request: Request) -> Response:
        lang = _lang(request)
        t = _TEXT[lang]
        c = claims(token)
        if c is None:
            return _page(lang, t["title"], f"<p>{html.escape(t['invalid'])}</p>", 404)
        sender = html.escape(sender_name(c.account_id))
        form = (f'<p>{t["ask"].format(sender=sender)}</p><form method="post" action="/u/{html.escape(token)}'
                f'?lang={lang}"><input type="hidden" name="confirm" value="1">'
                f'<button type="submit">{html.escape(t["button"])}</button></form>')
        return _page(lang, t["title"], form)

    @router.post("/u/{token}")
    async def post(token: str, request: Request) -> Response:
        lang = _lang(request)
        t = _TEXT[lang]
        c = claims(token)
        if c is None:
            return PlainTextResponse("invalid token", status_code=404)
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        await asyncio.to_thread(unsubscribe, c, "one-click" if one_click else "page")
        if one_click:
            return PlainTextResponse("unsubscribed", status_code=200)
        sender = html.escape(sender_name(c.account_id))
        return _page(lang, t["title"], f"<p>{t['done'].format(sender=sender)}</p>")

    return router
