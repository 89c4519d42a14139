"""Guardrails over HTTP: the account's webhook URL, disabled addresses, and the admin routes (suspend,
reinstate, terminate, show, billing state, held messages, per-account guardrail settings)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy import update

from crm import accounts as account_repo
from crm.domain import BillingState
from crm.schema import accounts
from envoi.http.deps import Services, admin, current_account, services
from envoi.http.problems import Problem, not_found
from envoi.http.schemas import Strict
from guardrails import account_state as sm
from guardrails.policy import SETTINGS, PolicyError, describe_settings, resolve_policy
from sender import accounts_service as svc_accounts
from sender.address_failures import disabled_addresses
from sender.guardrail_policy import SETTINGS_KEY, account_overrides
from sender.webhook_delivery import SIGNATURE_HEADER, UrlRefused, check_url, webhook_secret

router = APIRouter(prefix="/v1", tags=["guardrails"])
admin_router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(admin)])


class _Body(Strict):
    """Unknown fields refused, no NUL characters (see `Strict`)."""


class WebhookIn(_Body):
    url: str | None = Field(None, max_length=2000)


class NoteIn(_Body):
    note: str = Field(..., min_length=1, max_length=2000)
    actor: str = Field("ops", min_length=1, max_length=100)


class SuspendIn(NoteIn):
    reason: sm.SuspensionReason = sm.SuspensionReason.MANUAL


class BillingIn(_Body):
    state: BillingState
    overdue_since: date | None = None
    actor: str = Field("crm", min_length=1, max_length=100)


class GuardrailSettingsIn(_Body):
    settings: dict[str, Any]


def _signing_key(s: Services) -> str:
    return s.settings.signing_keys[0]


# -- the account's own routes ----------------------------------------------------------------------------------

@router.get("/account/webhook")
def get_webhook(account: account_repo.Account = Depends(current_account),
                s: Services = Depends(services)) -> dict[str, Any]:
    return {"url": account.webhook_url, "secret": webhook_secret(_signing_key(s), account.id),
            "signature_header": SIGNATURE_HEADER}


@router.put("/account/webhook")
async def put_webhook(body: WebhookIn, account: account_repo.Account = Depends(current_account),
                      s: Services = Depends(services)) -> dict[str, Any]:
    url = (body.url or "").strip() or None
    if url is not None:
        try:
            await asyncio.to_thread(check_url, url, s.settings.webhook_allow_private)
        except UrlRefused as exc:
            raise Problem(422, "webhook-url-refused", "Webhook URL refused", f"url {exc}", field="url") from None

    def save() -> None:
        with s.engine.begin() as conn:
            conn.execute(update(accounts).where(accounts.c.id == account.id).values(webhook_url=url))
            account_repo.audit(conn, account.id, "api", "account.webhook", {"url": url})

    await asyncio.to_thread(save)
    return {"url": url, "secret": webhook_secret(_signing_key(s), account.id), "signature_header": SIGNATURE_HEADER}


@router.get("/suppressions/disabled")
def get_disabled(after: str = Query("", max_length=320), limit: int = Query(100, ge=1, le=1000),
                 account: account_repo.Account = Depends(current_account),
                 s: Services = Depends(services)) -> dict[str, Any]:
    """Addresses disabled by the three-failure rule, with the outcomes that led there."""
    with s.engine.connect() as conn:
        items = disabled_addresses(conn, account.id, after, limit)
    return {"items": items, "next_after": items[-1]["address"] if len(items) == limit else None}


@router.get("/account/guardrails")
def get_guardrails(account: account_repo.Account = Depends(current_account),
                   s: Services = Depends(services)) -> dict[str, Any]:
    policy = resolve_policy(s.settings.guardrail_overrides, account_overrides(account.settings))
    return {"settings": describe_settings(policy)}


# -- admin -----------------------------------------------------------------------------------------------------

def _svc_error(exc: Exception) -> Problem:
    if isinstance(exc, svc_accounts.AccountNotFound):
        return not_found("account", "account_id")
    if isinstance(exc, sm.InvalidTransition):
        return Problem(409, "invalid-transition", "Transition refused", str(exc), field="status")
    return Problem(422, "validation", "Invalid request", str(exc), field="note")


@admin_router.get("/accounts/{account_id}")
def admin_show(account_id: int, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        view = svc_accounts.show(s.engine, account_id)
    except svc_accounts.AccountNotFound as exc:
        raise _svc_error(exc) from None
    with s.engine.connect() as conn:
        acct = account_repo.get_account(conn, account_id)
    assert acct is not None
    view["guardrails"] = describe_settings(resolve_policy(s.settings.guardrail_overrides,
                                                          account_overrides(acct.settings)))
    return view


@admin_router.post("/accounts/{account_id}/suspend")
async def admin_suspend(account_id: int, body: SuspendIn, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        out = await svc_accounts.suspend(s.engine, s.redis, account_id, body.reason, {"by": body.actor},
                                         actor=body.actor, note=body.note)
    except (svc_accounts.AccountNotFound, sm.InvalidTransition) as exc:
        raise _svc_error(exc) from None
    return {"account_id": account_id, "status": out.status.value, "changed": out.changed,
            "paused_campaigns": out.campaigns}


@admin_router.post("/accounts/{account_id}/reinstate")
async def admin_reinstate(account_id: int, body: NoteIn, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        out = await svc_accounts.reinstate(s.engine, s.redis, s.queue, account_id, actor=body.actor, note=body.note)
    except (svc_accounts.AccountNotFound, sm.InvalidTransition, ValueError) as exc:
        raise _svc_error(exc) from None
    return {"account_id": account_id, "status": out.status.value, "released_messages": out.released,
            "resumed_campaigns": out.campaigns}


@admin_router.post("/accounts/{account_id}/terminate")
async def admin_terminate(account_id: int, body: NoteIn, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        out = await svc_accounts.terminate(s.engine, s.redis, account_id, actor=body.actor, note=body.note)
    except (svc_accounts.AccountNotFound, sm.InvalidTransition, ValueError) as exc:
        raise _svc_error(exc) from None
    return {"account_id": account_id, "status": out.status.value, "cancelled_messages": out.cancelled,
            "cancelled_campaigns": out.campaigns}


@admin_router.post("/accounts/{account_id}/held/cancel")
def admin_cancel_held(account_id: int, body: NoteIn, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        out = svc_accounts.cancel_held(s.engine, account_id, body.actor, body.note)
    except svc_accounts.AccountNotFound as exc:
        raise _svc_error(exc) from None
    return {"account_id": account_id, "cancelled_messages": out.cancelled, "cancelled_campaigns": out.campaigns}


@admin_router.put("/accounts/{account_id}/billing")
def admin_billing(account_id: int, body: BillingIn, s: Services = Depends(services)) -> dict[str, Any]:
    try:
        svc_accounts.set_billing(s.engine, account_id, body.state, body.overdue_since, body.actor)
    except svc_accounts.AccountNotFound as exc:
        raise _svc_error(exc) from None
    return {"account_id": account_id, "billing_state": body.state.value,
            "overdue_since": (body.overdue_since.isoformat() if body.overdue_since else None)}


@admin_router.put("/accounts/{account_id}/guardrails")
def admin_guardrails(account_id: int, body: GuardrailSettingsIn, s: Services = Depends(services)) -> dict[str, Any]:
    """Per-account guardrail settings: stricter than the contract only (refused with the setting named)."""
    try:
        policy = resolve_policy(s.settings.guardrail_overrides, body.settings)
    except PolicyError as exc:
        raise Problem(422, "guardrail-setting-refused", "Guardrail setting refused", str(exc),
                      field=f"settings.{exc.setting}", known=list(SETTINGS)) from None
    with s.engine.begin() as conn:
        acct = account_repo.get_account(conn, account_id)
        if acct is None:
            raise not_found("account", "account_id")
        merged = dict(acct.settings)
        merged[SETTINGS_KEY] = body.settings
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(settings=merged))
        account_repo.audit(conn, account_id, "admin", "account.guardrails", {"settings": body.settings})
    return {"account_id": account_id, "settings": describe_settings(policy)}


# -- used by other routes ----------------------------------------------------------------------------------------

def content_problem(violations: list[Any]) -> Problem:
    """A 422 naming every content problem (guardrails.content), the first one as `field`."""
    errors = [{"field": v.field, "code": v.code.value, "detail": v.message} for v in violations]
    return Problem(422, "content-refused", "Content refused", violations[0].message, errors=errors)


def campaign_guardrails(s: Services, account_id: int, campaign_id: int, completed_at: Any) -> dict[str, Any]:
    """Each threshold of the campaign with its current value, limit and distance. Called from a sync route
    (FastAPI's thread pool): the Redis client belongs to the event loop, so run there."""
    import anyio.from_thread

    from envoi.composition import threshold_monitor

    monitor = threshold_monitor(s.settings, s.engine, s.redis)
    return anyio.from_thread.run(monitor.campaign_view, account_id, campaign_id, completed_at)
