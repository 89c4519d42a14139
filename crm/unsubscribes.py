"""Unsubscribe actions in SQL: suppressions written with their webhook and their undo record, in one transaction.

An action remembers exactly what it changed (`effects`), so that undo removes the suppressions this action
created and nothing else (an older unsubscribe, a complaint or a hard bounce of the same address stay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm import webhooks
from crm.db import as_utc, utcnow
from crm.domain import Channel, MessageStatus, SuppressionReason
from crm.schema import campaigns, contacts, list_members, messages, suppressions, unsubscribe_actions


class Scope(StrEnum):
    ACCOUNT = "account"  # every marketing email of this account (the default, and what one-click does)
    LIST = "list"  # only the list the message was sent to
    ALL_CHANNELS = "all_channels"  # email and SMS of this account


@dataclass(frozen=True, slots=True)
class Request:
    account_id: int
    contact_id: int  # 0 when the message had no contact (a transactional send)
    message_id: int
    campaign_id: int
    scope: Scope
    source: str  # page | one-click | mailto


@dataclass(frozen=True, slots=True)
class Applied:
    action_id: int | None  # None when nothing changed (a replayed request): there is nothing to undo
    suppressed: list[tuple[Channel, str]] = field(default_factory=list)  # to publish to the fence (always)
    lists: list[int] = field(default_factory=list)


def _ins(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _addresses(conn: Connection, req: Request) -> tuple[str | None, str | None]:
    email = mobile = None
    if req.contact_id:
        row = conn.execute(select(contacts.c.email, contacts.c.mobile).where(
            contacts.c.account_id == req.account_id, contacts.c.id == req.contact_id)).first()
        if row is not None:
            email, mobile = row.email, row.mobile
    if email is None and req.message_id:
        email = conn.execute(select(messages.c.recipient).where(
            messages.c.account_id == req.account_id, messages.c.id == req.message_id,
            messages.c.channel == Channel.EMAIL)).scalar()
    return (email.lower() if email else None), mobile


def _suppress(conn: Connection, req: Request, channel: Channel, address: str, now: datetime) -> int | None:
    return conn.execute(
        _ins(conn, suppressions).values(
            account_id=req.account_id, channel=channel, address=address, reason=SuppressionReason.UNSUBSCRIBED,
            source=req.source, campaign_id=req.campaign_id or None, message_id=req.message_id or None,
            created_at=now,
        ).on_conflict_do_nothing().returning(suppressions.c.id)
    ).scalar()


def list_of_campaign(conn: Connection, account_id: int, campaign_id: int) -> int | None:
    if not campaign_id:
        return None
    return conn.execute(select(campaigns.c.list_id).where(
        campaigns.c.account_id == account_id, campaigns.c.id == campaign_id)).scalar()


def apply(conn: Connection, req: Request) -> Applied:
    """Write the unsubscribe (idempotent). The caller publishes `suppressed` to the fence after the commit."""
    now = utcnow()
    email, mobile = _addresses(conn, req)
    suppressed: list[tuple[Channel, str]] = []
    created: list[int] = []
    left: list[int] = []
    if req.scope is Scope.LIST:
        list_id = list_of_campaign(conn, req.account_id, req.campaign_id)
        if list_id is not None and req.contact_id and conn.execute(delete(list_members).where(
                list_members.c.list_id == list_id, list_members.c.contact_id == req.contact_id)).rowcount:
            left.append(list_id)
            # Messages of this list's campaigns still queued for the contact are cancelled at once.
            conn.execute(update(messages).where(
                messages.c.account_id == req.account_id, messages.c.contact_id == req.contact_id,
                messages.c.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value]),
                messages.c.campaign_id.in_(select(campaigns.c.id).where(campaigns.c.list_id == list_id)),
            ).values(status=MessageStatus.CANCELLED, updated_at=now, last_error="unsubscribed from the list"))
    else:
        targets = [(Channel.EMAIL, email)]
        if req.scope is Scope.ALL_CHANNELS:
            targets.append((Channel.SMS, mobile))
        for channel, address in targets:
            if not address:
                continue
            suppressed.append((channel, address))
            sid = _suppress(conn, req, channel, address, now)
            if sid is not None:
                created.append(int(sid))
                webhooks.enqueue(conn, req.account_id, "contact.unsubscribed", {
                    "contact_id": req.contact_id or None, "channel": channel.value, "address": address,
                    "scope": req.scope.value, "source": req.source, "campaign_id": req.campaign_id or None,
                    "message_id": req.message_id or None, "suppression_id": int(sid), "at": now.isoformat(),
                })
    if not created and not left:
        return Applied(None, suppressed)
    action_id = int(conn.execute(insert(unsubscribe_actions).values(
        account_id=req.account_id, contact_id=req.contact_id or None, message_id=req.message_id or None,
        campaign_id=req.campaign_id or None, scope=req.scope.value, source=req.source,
        effects={"suppressions": created, "lists": left}, created_at=now,
    ).returning(unsubscribe_actions.c.id)).scalar_one())
    account_repo.audit(conn, req.account_id, "recipient", "contact.unsubscribed", {
        "action_id": action_id, "contact_id": req.contact_id, "campaign_id": req.campaign_id,
        "scope": req.scope.value, "source": req.source})
    return Applied(action_id, suppressed, left)


@dataclass(frozen=True, slots=True)
class Undone:
    retracted: list[tuple[Channel, str]]  # suppressions removed: the caller retracts them from the fence
    lists: list[int]


def undo(conn: Connection, req: Request, action_id: int) -> Undone | None:
    """Undo one action of this recipient (token's account, contact and message must match): None if unknown."""
    row = conn.execute(select(unsubscribe_actions).where(
        unsubscribe_actions.c.id == action_id, unsubscribe_actions.c.account_id == req.account_id,
    )).first()
    if row is None or (row.contact_id or 0) != req.contact_id or (row.message_id or 0) != req.message_id:
        return None
    if row.undone_at is not None:
        return Undone([], [])  # idempotent
    now = utcnow()
    ids = [int(i) for i in row.effects.get("suppressions", [])]
    gone = [(Channel(r.channel), r.address) for r in conn.execute(
        select(suppressions.c.channel, suppressions.c.address).where(
            suppressions.c.account_id == req.account_id, suppressions.c.id.in_(ids)))] if ids else []
    if ids:
        conn.execute(delete(suppressions).where(suppressions.c.account_id == req.account_id,
                                                suppressions.c.id.in_(ids)))
    lists = [int(i) for i in row.effects.get("lists", [])]
    if lists and row.contact_id:
        for lid in lists:
            conn.execute(_ins(conn, list_members).values(list_id=lid, contact_id=row.contact_id, added_at=now)
                         .on_conflict_do_nothing())
    conn.execute(update(unsubscribe_actions).where(unsubscribe_actions.c.id == action_id).values(undone_at=now))
    for channel, address in gone:
        webhooks.enqueue(conn, req.account_id, "contact.resubscribed", {
            "contact_id": row.contact_id, "channel": channel.value, "address": address, "action_id": action_id,
            "at": now.isoformat()})
    account_repo.audit(conn, req.account_id, "recipient", "contact.unsubscribe_undone",
                       {"action_id": action_id, "contact_id": row.contact_id})
    return Undone(gone, lists)


def list_suppressions(conn: Connection, account_id: int, after_id: int, limit: int, *,
                      channel: str | None = None, reason: str | None = None, source: str | None = None,
                      campaign_id: int | None = None, address: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """The suppression list as the CRM reads it: who (address), when, how (reason, source), which campaign and
    message; filtered, in id order (keyset pagination with `after_id`)."""
    q = select(suppressions).where(suppressions.c.account_id == account_id, suppressions.c.id > after_id)
    for column, value in ((suppressions.c.channel, channel), (suppressions.c.reason, reason),
                          (suppressions.c.source, source), (suppressions.c.campaign_id, campaign_id)):
        if value is not None:
            q = q.where(column == value)
    if address is not None:
        wanted = address.strip().lower() if "@" in address else address.strip()
        q = q.where(suppressions.c.address == wanted)
    if since is not None:
        q = q.where(suppressions.c.created_at >= since)
    if until is not None:
        q = q.where(suppressions.c.created_at < until)
    out = []
    for r in conn.execute(q.order_by(suppressions.c.id).limit(limit)):
        d = dict(r._mapping)
        d.pop("account_id")
        d["created_at"] = as_utc(d["created_at"])
        out.append(d)
    return out
