"""Twilio's webhooks (issue 6): message status callbacks and inbound messages (STOP / START replies).

Every request is authenticated with `X-Twilio-Signature` by the SDK's `RequestValidator` against the *public*
URL (the configured base URL + the path and query Twilio called: behind a reverse proxy the request's own
Host/scheme are not what Twilio signed, STANDARDS.md §6). An invalid or missing signature gets 403 and changes
nothing.

Status callbacks: the status is recorded per message (`sms_messages`); "delivered" appends a `delivered` event;
"undelivered"/"failed" fail the ledger row and append a `bounced` event whose `data.class` says what it counts
for: `recipient` (21211, 21614, 30005, 30006: the number is invalid or unreachable — a delivery failure toward
the 3-failure rule, contract Annex 1 (iii)), `policy` (30007 carrier filtering: counts toward the account's
failure rate, not against the number), `unsubscribed` (21610: the recipient opted out at the carrier — the
number is suppressed), or `other`.

Inbound messages: an opt-out keyword (any case, trimmed) suppresses the number for the account(s) sending from
the number or Messaging Service it was addressed to (CPCE L34-5, GDPR art. 21); START / UNSTOP lift only a
suppression the recipient's own STOP created, and only while the consent ledger still holds a granted SMS consent
for that number.

Hooks (the composition root wires them; tracking never imports sender):
- `on_status(conn, message, status, code)`: every first final status (`delivered`, `undelivered`, `failed`), in
  the webhook's transaction — the 3-failure rule for SMS numbers (a `delivered` resets the count);
- `on_recipient_failure(conn, message, code)`: kept for callers that only want the `recipient` class;
- `after_failure(message, code)`: awaited after the commit for a first `undelivered`/`failed` — the mailing
  thresholds' counters (failure rate), which live in Redis;
- `on_opt_out(account_id, number)`: awaited after the commit and BEFORE answering Twilio, for every account an
  opt-out (STOP keyword, or 21610 in a callback) applies to — the unsubscribe fence (`unsubscribe.fence`), so
  that no SMS to that number is handed to Twilio once the opt-out is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from sqlalchemy.engine import Connection, Engine
from twilio.request_validator import RequestValidator

from crm import accounts as account_repo
from crm import ledger
from crm import sms as sms_repo
from crm.domain import Channel, ConsentStatus, EventType, SuppressionReason

log = logging.getLogger(__name__)

# Twilio's default opt-out keywords and the French ones (STANDARDS.md §6), compared case-folded, whitespace-collapsed.
OPT_OUT_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout",
                              "arret", "arrêt", "stop sms", "desabonner", "désabonner"})
OPT_IN_KEYWORDS = frozenset({"start", "unstop"})
RECIPIENT_FAILURES = frozenset({21211, 21614, 30005, 30006})
POLICY_BLOCK = 30007
UNSUBSCRIBED = 21610
KEYWORD_SOURCE = "sms:keyword"
CARRIER_SOURCE = "twilio:21610"
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Called in the webhook's transaction for a `recipient` failure: (conn, message row, Twilio error code).
RecipientFailureHook = Callable[[Connection, dict[str, Any], int], None]
# In the webhook's transaction, for a first final status: (conn, message row, status, Twilio error code or None).
StatusHook = Callable[[Connection, dict[str, Any], str, int | None], None]
# After the commit, for a first undelivered/failed status: (message row, Twilio error code or None).
FailureHook = Callable[[dict[str, Any], int | None], Awaitable[object]]
# After the commit, before the answer: (account id, number) that opted out.
OptOutHook = Callable[[int, str], Awaitable[object]]
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})


def keyword(body: str) -> str:
    return " ".join(body.split()).casefold()


def failure_class(code: int | None) -> str:
    if code in RECIPIENT_FAILURES:
        return "recipient"
    if code == POLICY_BLOCK:
        return "policy"
    if code == UNSUBSCRIBED:
        return "unsubscribed"
    return "other"


def build_twilio_router(engine: Engine, auth_token: str, public_url: str,
                        on_recipient_failure: RecipientFailureHook | None = None, *,
                        on_status: StatusHook | None = None, after_failure: FailureHook | None = None,
                        on_opt_out: OptOutHook | None = None) -> APIRouter:
    validator = RequestValidator(auth_token) if auth_token else None
    base = public_url.rstrip("/")
    router = APIRouter(include_in_schema=False)

    async def signed_form(request: Request) -> dict[str, str] | None:
        raw = await request.body()
        params = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        url = base + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("x-twilio-signature", "")
        if validator is None or not signature or not validator.validate(url, params, signature):
            log.warning("twilio webhook refused: bad signature for %s", request.url.path)
            return None
        return params

    @router.post("/twilio/status")
    async def status(request: Request) -> Response:
        params = await signed_form(request)
        if params is None:
            return Response("invalid signature", status_code=403)
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        state = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
        raw_code = params.get("ErrorCode", "")
        code = int(raw_code) if raw_code.isdigit() and int(raw_code) else None
        raw_id = request.query_params.get("m", "")
        message_id = int(raw_id) if raw_id.isdigit() else None
        m = await asyncio.to_thread(_apply_status, message_id, sid, state, code)
        if m is not None:
            if code == UNSUBSCRIBED and on_opt_out is not None:
                await on_opt_out(int(m["account_id"]), str(m["recipient"]))
            if after_failure is not None:
                try:
                    await after_failure(m, code)
                except Exception:  # Redis down: the ledger holds the failure; the counters' recount repairs them
                    log.exception("twilio status: failure not counted for message %s", m["id"])
        return Response(status_code=204)

    def _apply_status(message_id: int | None, sid: str, state: str, code: int | None) -> dict[str, Any] | None:
        """Returns the message row when this callback is its first undelivered/failed status."""
        with engine.begin() as conn:
            m = sms_repo.find_for_callback(conn, message_id, sid)
            if m is None or not state:
                log.info("twilio status %s for unknown message %s / %s", state, message_id, sid)
                return None
            if not sms_repo.apply_delivery_status(conn, m, sid, state, code):
                return None  # a repeat or a stale status: counted once
            if state in FINAL_STATUSES and on_status is not None:
                on_status(conn, m, state, code)
            if state == "delivered":
                sms_repo.add_event(conn, m, EventType.DELIVERED, {"sid": sid})
            elif state in {"undelivered", "failed"}:
                klass = failure_class(code)
                sms_repo.add_event(conn, m, EventType.BOUNCED, {
                    "sid": sid, "code": code, "twilio_status": state, "class": klass,
                    "counts_against_recipient": klass == "recipient"})
                if code == UNSUBSCRIBED:
                    ledger.add_suppression(conn, m["account_id"], Channel.SMS, m["recipient"],
                                           SuppressionReason.UNSUBSCRIBED, CARRIER_SOURCE,
                                           campaign_id=m["campaign_id"], message_id=m["id"])
                elif klass == "recipient" and on_recipient_failure is not None and code is not None:
                    on_recipient_failure(conn, m, code)
                return m
            return None

    @router.post("/twilio/inbound")
    async def inbound(request: Request) -> Response:
        params = await signed_form(request)
        if params is None:
            return Response("invalid signature", status_code=403)
        word = keyword(params.get("Body", ""))
        raw_account = request.query_params.get("account", "")
        if word in OPT_OUT_KEYWORDS or word in OPT_IN_KEYWORDS:
            opted_out = await asyncio.to_thread(_apply_keyword, word, params,
                                                int(raw_account) if raw_account.isdigit() else None)
            if on_opt_out is not None:
                # Published even when the suppression existed already: a replay (Twilio retries a webhook that
                # failed) must complete the fence, as the unsubscribe page does.
                for aid, number in opted_out:
                    await on_opt_out(aid, number)
        return Response(_EMPTY_TWIML, media_type="text/xml")

    def _apply_keyword(word: str, params: dict[str, str], account_id: int | None) -> list[tuple[int, str]]:
        """Returns the (account, number) pairs an opt-out applies to (none for START / UNSTOP)."""
        number = params.get("From", "").strip()
        if not number:
            return []
        opted_out: list[tuple[int, str]] = []
        with engine.begin() as conn:
            targets = [account_id] if account_id is not None else sms_repo.accounts_for_inbound(
                conn, params.get("To", "").strip(), params.get("MessagingServiceSid", "").strip())
            for aid in targets:
                if word in OPT_OUT_KEYWORDS:
                    opted_out.append((aid, number))
                    if ledger.add_suppression(conn, aid, Channel.SMS, number, SuppressionReason.UNSUBSCRIBED,
                                              KEYWORD_SOURCE):
                        account_repo.audit(conn, aid, "recipient", "sms.unsubscribed",
                                           {"keyword": word, "sid": params.get("MessageSid")})
                else:
                    _resubscribe(conn, aid, number, word)
        return opted_out

    return router


def _resubscribe(conn: Connection, account_id: int, number: str, word: str) -> None:
    """START / UNSTOP: lift the recipient's own opt-out, only while the consent ledger still allows sending."""
    consents = sms_repo.sms_consents(conn, account_id, number)
    allowed = bool(consents) and all(c is ConsentStatus.GRANTED for c in consents)
    if not allowed:
        # No granted consent on record (or a withdrawal): a START reply is not a consent with proof (CNIL).
        account_repo.audit(conn, account_id, "recipient", "sms.resubscribe_refused",
                           {"keyword": word, "reason": "no granted sms consent in the consent ledger"})
        return
    # Only opt-outs the recipient made (keyword, carrier STOP); never a disable, a complaint, an erasure, a manual one.
    if sms_repo.remove_suppression(conn, account_id, number, [SuppressionReason.UNSUBSCRIBED],
                                   [KEYWORD_SOURCE, CARRIER_SOURCE]):
        account_repo.audit(conn, account_id, "recipient", "sms.resubscribed", {"keyword": word})
