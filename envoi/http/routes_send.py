"""Templates, campaigns (create, send, cancel, status) and single transactional sends, with Idempotency-Key."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm import campaigns as campaign_repo
from crm import contacts as contact_repo
from crm import idempotency, ledger
from crm.db import utcnow
from crm.domain import CampaignStatus, Channel, MessageKind, MessageStatus
from envoi.http.deps import Services, current_account, services
from envoi.http.problems import Problem, not_found
from envoi.http.routes_domains import require_verified_domain
from envoi.http.routes_guardrails import campaign_guardrails, content_problem  # issue 3
from envoi.http.routes_sms import sms_campaign_report  # issue 6
from envoi.http.schemas import CampaignIn, EmailSendIn, TemplateIn
from guardrails.consent import account_may_send
from guardrails.content import ViolationCode, check_campaign, check_template  # issue 3
from sender.queue import QueueItem
from sender.render import CompiledTemplate, RenderError, sample_context

router = APIRouter(prefix="/v1", tags=["sending"])


def _check_template(subject: str, html: str, text: str, data: dict[str, Any] | None = None) -> None:
    try:
        CompiledTemplate(subject, html, text).render({**sample_context(), "data": data or {}})
    except RenderError as exc:
        raise Problem(422, "template", "Template does not render", exc.message, field=exc.field) from None


def _require_sender(conn: Connection, account_id: int) -> Any:
    profile = account_repo.get_sender_profile(conn, account_id)
    missing = profile.missing_fields() if profile else ["legal_name", "postal_address", "phone", "from_email"]
    if missing:
        # Contract, Annex 1, obligation 1: every marketing message names the sender (phone, postal address).
        raise Problem(422, "sender-profile-incomplete", "Sender profile incomplete",
                      f"complete the account's sender profile first: {', '.join(missing)}",
                      field=f"sender_profile.{missing[0]}", missing=missing)
    return profile


def _require_active(account: account_repo.Account) -> None:
    if not account_may_send(account.status):
        raise Problem(403, "account-suspended", "Account cannot send",
                      f"account is {account.status.value}: {account.suspension_reason or ''}".strip(": "),
                      field="account", account_status=account.status.value)


@router.post("/templates", status_code=201)
def create_template(body: TemplateIn, account: account_repo.Account = Depends(current_account),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    if not body.html and not body.text:
        raise Problem(422, "validation", "Empty template", "give an html or a text body (or both)", field="html")
    _check_template(body.subject, body.html, body.text)
    # issue 3: content checks (Annex 1 obligations i, ii, iv; sensitive data). The sender block is checked when
    # a campaign uses the template (the profile may be completed after the template is written).
    violations = [v for v in check_template(subject=body.subject, html=body.html, text=body.text, sender=None,
                                            kind=MessageKind.TRANSACTIONAL)
                  if v.code is not ViolationCode.SENDER_INCOMPLETE]
    if violations:
        raise content_problem(violations)
    with svc.engine.begin() as conn:
        tid = campaign_repo.create_template(conn, account.id, body.name, body.subject, body.html, body.text)
    return {"id": tid, "name": body.name, "subject": body.subject}


@router.get("/templates/{template_id}")
def get_template(template_id: int, account: account_repo.Account = Depends(current_account),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        t = campaign_repo.get_template(conn, account.id, template_id)
    if t is None:
        raise not_found("template", "template_id")
    return {"id": t.id, "name": t.name, "subject": t.subject, "html": t.html, "text": t.text}


@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn, account: account_repo.Account = Depends(current_account),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        if contact_repo.get_list(conn, account.id, body.list_id) is None:
            raise not_found("list", "list_id")
        template = campaign_repo.get_template(conn, account.id, body.template_id)
        if template is None:
            raise not_found("template", "template_id")
        profile = _require_sender(conn, account.id)
        violations = check_campaign(subject=template.subject, html=template.html, text=template.text,
                                    sender=profile, channel=Channel(body.channel))  # issue 3: content checks
        if violations:
            raise content_problem(violations)
        # issue 6: an SMS campaign needs the SMS sender settings and a body within the segment limit.
        sms = (sms_campaign_report(conn, svc.settings, account.id, template, body.kind)
               if body.channel == "sms" else None)
        if body.kind == MessageKind.MARKETING.value and body.channel == "email":  # ENVOI_REQUIRE_VERIFIED_DOMAIN
            require_verified_domain(svc, account.id, body.from_email or profile.from_email)
        cid = campaign_repo.create_campaign(
            conn, account.id, name=body.name, channel=body.channel, kind=body.kind, list_id=body.list_id,
            template_id=body.template_id, from_email=body.from_email or profile.from_email,
            from_name=body.from_name if body.from_name is not None else profile.from_name,
            reply_to=body.reply_to or profile.reply_to,
        )
        view = _campaign_view(conn, account.id, cid)
        if sms is not None:
            view["sms"] = sms  # issue 6: encoding and segments of the body as it will travel
        return view


def _campaign_view(conn: Connection, account_id: int, campaign_id: int) -> dict[str, Any]:
    row = campaign_repo.campaign_row(conn, account_id, campaign_id)
    if row is None:
        raise not_found("campaign", "campaign_id")
    counts = ledger.status_counts(conn, campaign_id)
    audience = row.pop("audience") or {}
    row.pop("account_id", None)
    row["audience"] = {"queued": audience.get("queued", 0), "skipped": audience.get("skipped", {})}
    row["counters"] = {s.value: counts.get(s.value, 0) for s in MessageStatus}
    row["counters"]["total"] = sum(counts.values())
    return row


@router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: int, account: account_repo.Account = Depends(current_account),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        return _campaign_view(conn, account.id, campaign_id)


@router.get("/campaigns/{campaign_id}/stats")
def campaign_stats(campaign_id: int, account: account_repo.Account = Depends(current_account),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        view = _campaign_view(conn, account.id, campaign_id)
    return {"campaign_id": campaign_id, "status": view["status"], "audience": view["audience"],
            "counters": view["counters"],
            "guardrails": campaign_guardrails(svc, account.id, campaign_id, view["completed_at"])}  # issue 3


def _request_hash(path: str, body: bytes) -> str:
    return hashlib.sha256(path.encode() + b"\0" + body).hexdigest()


def _replay(stored: idempotency.Stored, request_hash: str) -> JSONResponse:
    if stored.request_hash != request_hash:
        raise Problem(422, "idempotency-key-reused", "Idempotency-Key reused",
                      "this key was used for a different request", field="Idempotency-Key")
    if stored.status_code is None:
        raise Problem(409, "idempotency-in-progress", "Request in progress",
                      "a request with this key is still being processed", field="Idempotency-Key")
    return JSONResponse(stored.response, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"})


@router.post("/campaigns/{campaign_id}/send", status_code=202)
async def send_campaign(campaign_id: int, request: Request,
                        idempotency_key: str | None = Header(None, max_length=200),
                        account: account_repo.Account = Depends(current_account),
                        svc: Services = Depends(services)) -> Any:
    _require_active(account)
    body = await request.body()
    rhash = _request_hash(request.url.path, body)

    def run() -> Any:
        with svc.engine.begin() as conn:
            if idempotency_key:
                stored = idempotency.claim(conn, account.id, idempotency_key, rhash)
                if stored is not None:
                    return _replay(stored, rhash)
            campaign = campaign_repo.get_campaign(conn, account.id, campaign_id)
            if campaign is None:
                raise not_found("campaign", "campaign_id")
            _require_sender(conn, account.id)
            if campaign.kind == MessageKind.MARKETING and campaign.channel == Channel.EMAIL:  # verified domain
                require_verified_domain(svc, account.id, campaign.from_email)
            started = campaign_repo.transition(
                conn, campaign_id, CampaignStatus.SENDING, when=frozenset({CampaignStatus.DRAFT}),
                started_at=utcnow())
            if not started:
                raise Problem(409, "campaign-not-draft", "Campaign already sent",
                              f"campaign is {campaign.status.value}; only a draft can be sent", field="campaign_id",
                              campaign_status=campaign.status.value)
            account_repo.audit(conn, account.id, "api", "campaign.send", {"campaign_id": campaign_id})
            view = json.loads(json.dumps(_campaign_view(conn, account.id, campaign_id), default=str))
            if idempotency_key:
                idempotency.store(conn, account.id, idempotency_key, 202, view)
            return view

    # The worker's fan-out picks the campaign up from the ledger: nothing to enqueue here.
    return await asyncio.to_thread(run)


@router.post("/campaigns/{campaign_id}/cancel")
def cancel_campaign(campaign_id: int, account: account_repo.Account = Depends(current_account),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        campaign = campaign_repo.get_campaign(conn, account.id, campaign_id)
        if campaign is None:
            raise not_found("campaign", "campaign_id")
        ok = campaign_repo.transition(
            conn, campaign_id, CampaignStatus.CANCELLED,
            when=frozenset({CampaignStatus.DRAFT, CampaignStatus.SENDING, CampaignStatus.PAUSED}),
            cancelled_at=utcnow())
        if not ok:
            raise Problem(409, "campaign-finished", "Campaign cannot be cancelled",
                          f"campaign is {campaign.status.value}", field="campaign_id")
        cancelled = ledger.cancel_pending(conn, campaign_id)
        account_repo.audit(conn, account.id, "api", "campaign.cancel",
                           {"campaign_id": campaign_id, "cancelled_messages": cancelled})
        view = _campaign_view(conn, account.id, campaign_id)
    view["cancelled_messages"] = cancelled
    return view


@router.post("/messages/email", status_code=202)
async def send_email(body: EmailSendIn, request: Request,
                     idempotency_key: str | None = Header(None, max_length=200),
                     account: account_repo.Account = Depends(current_account),
                     svc: Services = Depends(services)) -> Any:
    _require_active(account)
    raw = await request.body()
    rhash = _request_hash(request.url.path, raw)

    def run() -> tuple[Any, int | None, bool]:
        with svc.engine.begin() as conn:
            if idempotency_key:
                stored = idempotency.claim(conn, account.id, idempotency_key, rhash)
                if stored is not None:
                    resp = _replay(stored, rhash)
                    mid = (stored.response or {}).get("id")
                    return resp, mid, False
            profile = _require_sender(conn, account.id)
            subject, html, text = body.subject, body.html, body.text
            if body.template_id is not None:
                t = campaign_repo.get_template(conn, account.id, body.template_id)
                if t is None:
                    raise not_found("template", "template_id")
                subject, html, text = t.subject, t.html, t.text
            if not subject:
                raise Problem(422, "validation", "Missing subject", "give a subject or a template_id", field="subject")
            if not html and not text:
                raise Problem(422, "validation", "Empty message", "give html or text (or a template_id)", field="html")
            _check_template(subject, html, text, body.data)
            contact = contact_repo.find_contact(conn, account.id, email=body.to)
            payload = {
                "subject": subject, "html": html, "text": text, "data": body.data,
                "from_email": body.from_email or profile.from_email,
                "from_name": body.from_name if body.from_name is not None else profile.from_name,
                "reply_to": body.reply_to or profile.reply_to,
                "sender": {"legal_name": profile.legal_name, "postal_address": profile.postal_address,
                           "phone": profile.phone, "from_email": profile.from_email},
            }
            mid = ledger.insert_message(conn, account.id, Channel.EMAIL, MessageKind(body.kind), body.to, payload,
                                        contact_id=contact["id"] if contact else None)
            response = {"id": mid, "status": MessageStatus.QUEUED.value, "to": body.to}
            if idempotency_key:
                idempotency.store(conn, account.id, idempotency_key, 202, response)
            return response, mid, True

    response, mid, _fresh = await asyncio.to_thread(run)
    if mid is not None:
        # Enqueue after commit; a replay re-enqueues too, harmless (the queue's guard drops second copies) and it
        # heals the case where Redis refused the first enqueue.
        status = await asyncio.to_thread(_status, svc, mid)
        if status == MessageStatus.QUEUED.value:
            await svc.queue.enqueue([QueueItem(mid, account.id, 0, body.kind == "transactional")])
    return response


def _status(svc: Services, mid: int) -> str | None:
    with svc.engine.connect() as conn:
        return ledger.message_statuses(conn, [mid]).get(mid)


@router.get("/messages/{message_id}")
def get_message(message_id: int, account: account_repo.Account = Depends(current_account),
                svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        m = ledger.get_message(conn, account.id, message_id)
    if m is None:
        raise not_found("message", "message_id")
    m.pop("account_id", None)
    return m
