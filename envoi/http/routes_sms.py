"""SMS over the API (issue 6): the account's SMS settings, the segment report of SMS campaigns, and single SMS
(`POST /v1/messages/sms`, Idempotency-Key as for email)."""

from __future__ import annotations

import asyncio
import json
from datetime import date, time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import AfterValidator, Field
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm import campaigns as campaign_repo
from crm import idempotency, ledger
from crm import sms as sms_repo
from crm.campaigns import Template
from crm.domain import Channel, MessageKind, MessageStatus
from envoi.http.deps import Services, current_account, services
from envoi.http.problems import Problem, not_found
from envoi.http.schemas import DbId, Line, Mobile, Strict
from envoi.settings import Settings
from sender.queue import QueueItem
from sender.render import CompiledTemplate, RenderError, sample_context
from sender.sms_config import SmsAccountConfig, SmsConfigError, SmsPlatform, account_sms_config
from sender.sms_encoding import MAX_BODY_CHARACTERS, SmsBodyError, check_sms_body, compose_marketing_sms

router = APIRouter(prefix="/v1", tags=["sms"])


def _local_time(value: time | None) -> time | None:
    if value is not None and value.tzinfo is not None:
        raise ValueError("give a local time without offset: the window is in the account's time zone")
    return value


LocalTime = Annotated[time | None, AfterValidator(_local_time)]


class SmsWindowIn(Strict):
    start: LocalTime = None
    end: LocalTime = None
    days: list[Annotated[int, Field(ge=0, le=6)]] | None = Field(default=None, max_length=7)  # 0 = Monday
    closed_dates: list[date] = Field(default_factory=list, max_length=400)


class SmsSettingsIn(Strict):
    messaging_service_sid: Annotated[str, Field(max_length=34)] = ""
    from_: Annotated[str, Field(max_length=16, alias="from")] = ""
    sender_name: Line = ""
    opt_out_mention: Line = ""
    max_segments: int | None = Field(default=None, ge=1, le=10)
    window: SmsWindowIn | None = None


class SmsSendIn(Strict):
    to: Mobile
    body: Annotated[str, Field(max_length=MAX_BODY_CHARACTERS)] = ""
    template_id: DbId | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    kind: Literal["transactional", "marketing"] = "transactional"


def platform(settings: Settings) -> SmsPlatform:
    return SmsPlatform(max_segments=settings.sms_max_segments, opt_out_mention=settings.sms_opt_out_mention)


def _config(conn: Connection, settings: Settings, account_id: int) -> SmsAccountConfig:
    profile = account_repo.get_sender_profile(conn, account_id)
    try:
        return account_sms_config(sms_repo.get_sms_settings(conn, account_id), profile, platform(settings))
    except SmsConfigError as exc:
        raise Problem(422, "sms-settings", "Invalid SMS settings", str(exc), field=exc.field) from None


def _require_sms_sender(config: SmsAccountConfig, kind: MessageKind) -> None:
    missing = config.missing() if kind is MessageKind.MARKETING else (["sms.from"] if config.sender is None else [])
    if missing:
        # Contract Annex 1, obligations 1 and 4: the SMS names its sender and says how to stop (CPCE L34-5).
        raise Problem(422, "sms-settings-incomplete", "SMS settings incomplete",
                      "set them with PUT /v1/account/sms-settings: " + ", ".join(missing),
                      field=missing[0], missing=missing)


def sms_report(text: str, config: SmsAccountConfig, kind: MessageKind, field: str,
               data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render `text` on a sample recipient as it will travel; report encoding and segments, or a 422."""
    if not text.strip():
        raise Problem(422, "validation", "Empty SMS", "the SMS body (the template's text) is empty", field=field)
    try:
        rendered = CompiledTemplate("", "", text).render({**sample_context(), "data": data or {}}).text.strip()
    except RenderError as exc:
        raise Problem(422, "template", "Template does not render", exc.message, field=field) from None
    if kind is MessageKind.MARKETING:
        rendered = compose_marketing_sms(rendered, config.sender_name, config.opt_out_mention)
    try:
        report = check_sms_body(rendered, config.max_segments)
    except SmsBodyError as exc:
        r = exc.report
        raise Problem(422, "sms-too-long", "SMS too long", str(exc), field=field, encoding=r.encoding.value,
                      segments=r.segments, max_segments=exc.limit, non_gsm=list(r.non_gsm)) from None
    return {"encoding": report.encoding.value, "segments": report.segments, "characters": report.characters,
            "non_gsm": list(report.non_gsm), "max_segments": config.max_segments, "preview": rendered}


def sms_campaign_report(conn: Connection, settings: Settings, account_id: int, template: Template,
                        kind: str) -> dict[str, Any]:
    """For `POST /v1/campaigns` with channel sms: the sender must be set, the body within the segment limit."""
    config = _config(conn, settings, account_id)
    _require_sms_sender(config, MessageKind(kind))
    return sms_report(template.text, config, MessageKind(kind), "template_id")


@router.get("/account/sms-settings")
def get_sms_settings(account: account_repo.Account = Depends(current_account),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        raw = sms_repo.get_sms_settings(conn, account.id)
        config = _config(conn, svc.settings, account.id)
    return {**raw, "effective": _effective(config)}


def _effective(c: SmsAccountConfig) -> dict[str, Any]:
    w = c.window
    return {"from": c.sender.from_ if c.sender else "",
            "messaging_service_sid": c.sender.messaging_service_sid if c.sender else "",
            "sender_name": c.sender_name, "opt_out_mention": c.opt_out_mention, "max_segments": c.max_segments,
            "window": {"timezone": w.timezone, "start": w.start.isoformat("minutes"),
                       "end": w.end.isoformat("minutes"), "days": sorted(w.days),
                       "closed_dates": sorted(d.isoformat() for d in w.extra_closed_dates),
                       "public_holidays_closed": w.public_holidays_closed},
            "missing": c.missing()}


@router.put("/account/sms-settings")
def put_sms_settings(body: SmsSettingsIn, account: account_repo.Account = Depends(current_account),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    raw = json.loads(body.model_dump_json(by_alias=True, exclude_none=True, exclude_defaults=True))
    with svc.engine.begin() as conn:
        profile = account_repo.get_sender_profile(conn, account.id)
        try:
            config = account_sms_config(raw, profile, platform(svc.settings))  # validate before saving
        except SmsConfigError as exc:
            raise Problem(422, "sms-settings", "Invalid SMS settings", str(exc), field=exc.field) from None
        sms_repo.put_sms_settings(conn, account.id, raw, actor="api")
    return {**raw, "effective": _effective(config)}


@router.post("/messages/sms", status_code=202)
async def send_sms(body: SmsSendIn, request: Request, idempotency_key: str | None = Header(None, max_length=200),
                   account: account_repo.Account = Depends(current_account),
                   svc: Services = Depends(services)) -> Any:
    from envoi.http.routes_send import _replay, _request_hash, _require_active

    _require_active(account)
    raw = await request.body()
    rhash = _request_hash(request.url.path, raw)
    kind = MessageKind(body.kind)

    def run() -> tuple[Any, int | None]:
        with svc.engine.begin() as conn:
            if idempotency_key:
                stored = idempotency.claim(conn, account.id, idempotency_key, rhash)
                if stored is not None:
                    return _replay(stored, rhash), (stored.response or {}).get("id")
            text, field = body.body, "body"
            if body.template_id is not None:
                t = campaign_repo.get_template(conn, account.id, body.template_id)
                if t is None:
                    raise not_found("template", "template_id")
                text, field = t.text, "template_id"
            elif not text:
                raise Problem(422, "validation", "Empty SMS", "give a body or a template_id", field="body")
            config = _config(conn, svc.settings, account.id)
            _require_sms_sender(config, kind)
            report = sms_report(text, config, kind, field, body.data)
            mid = ledger.insert_message(conn, account.id, Channel.SMS, kind, body.to, {"text": text, "data": body.data},
                                        contact_id=sms_repo.contact_by_mobile(conn, account.id, body.to))
            response = {"id": mid, "status": MessageStatus.QUEUED.value, "to": body.to,
                        "encoding": report["encoding"], "segments": report["segments"]}
            if idempotency_key:
                idempotency.store(conn, account.id, idempotency_key, 202, response)
            return response, mid

    response, mid = await asyncio.to_thread(run)
    if mid is not None:
        # After commit; a replay re-enqueues too (the queue's claimed guard drops the second copy).
        status = await asyncio.to_thread(_status, svc, mid)
        if status == MessageStatus.QUEUED.value:
            await svc.queue.enqueue([QueueItem(mid, account.id, 0, kind is MessageKind.TRANSACTIONAL)])
    return response


def _status(svc: Services, mid: int) -> str | None:
    with svc.engine.connect() as conn:
        return ledger.message_statuses(conn, [mid]).get(mid)
