"""The message ledger (one row per recipient), append-only events, and suppressions.

The ledger is the source of truth: Redis holds only a copy of what is pending (see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm.address_hash import AddressHasher
from crm.db import as_utc, utcnow
from crm.domain import Channel, EventType, MessageKind, MessageStatus, SuppressionReason
from crm.schema import campaigns, contacts, events, messages, suppressions


def _ins(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """What the queue needs to (re-)enqueue a message."""

    id: int
    account_id: int
    campaign_id: int | None
    kind: MessageKind


def insert_campaign_messages(
    conn: Connection, account_id: int, campaign_id: int, channel: Channel, kind: MessageKind,
    recipients: Sequence[tuple[int, str]],
) -> list[int]:
    """Create one ledger row per (contact, address); rows that exist already are kept (resumable fan-out).

    Returns the ids of the batch's rows still queued, so that a resumed batch is re-enqueued whole."""
    if not recipients:
        return []
    now = utcnow()
    rows = [
        {
            "account_id": account_id, "campaign_id": campaign_id, "contact_id": cid, "channel": channel,
            "kind": kind, "recipient": addr, "recipient_domain": domain_of(addr),
            "status": MessageStatus.QUEUED, "attempts": 0, "queued_at": now, "updated_at": now,
        }
        for cid, addr in recipients
    ]
    # executemany form: the statement is compiled once and cached ("insertmanyvalues" batches the rows),
    # where .values(rows) would compile a new 1,000-row statement for every batch.
    conn.execute(_ins(conn, messages).on_conflict_do_nothing(), rows)
    return list(
        conn.execute(
            select(messages.c.id).where(
                messages.c.campaign_id == campaign_id,
                messages.c.contact_id.in_([cid for cid, _ in recipients]),
                messages.c.status == MessageStatus.QUEUED,
            ).order_by(messages.c.id)
        ).scalars()
    )


def insert_message(
    conn: Connection, account_id: int, channel: Channel, kind: MessageKind, recipient: str,
    payload: dict[str, Any], contact_id: int | None = None,
) -> int:
    now = utcnow()
    return int(conn.execute(
        insert(messages).values(
            account_id=account_id, campaign_id=None, contact_id=contact_id, channel=channel, kind=kind,
            recipient=recipient, recipient_domain=domain_of(recipient), status=MessageStatus.QUEUED,
            attempts=0, payload=payload, queued_at=now, updated_at=now,
        ).returning(messages.c.id)
    ).scalar_one())


def load_for_dispatch(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Messages with what rendering needs: the contact's fields and the message's current status."""
    if not ids:
        return {}
    q = (
        select(
            messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.contact_id,
            messages.c.channel, messages.c.kind, messages.c.recipient, messages.c.recipient_domain,
            messages.c.status, messages.c.attempts, messages.c.payload, messages.c.queued_at,
            contacts.c.first_name, contacts.c.last_name, contacts.c.email, contacts.c.mobile,
            contacts.c.crm_id, contacts.c.locale, contacts.c.attributes,
            contacts.c.email_consent, contacts.c.sms_consent,
        )
        .select_from(messages.outerjoin(contacts, contacts.c.id == messages.c.contact_id))
        .where(messages.c.id.in_(list(ids)))
    )
    out = {}
    for row in conn.execute(q):
        d = dict(row._mapping)
        d["queued_at"] = as_utc(d["queued_at"])
        out[d["id"]] = d
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: int
    status: MessageStatus
    code: int | None = None
    enhanced: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    counts_attempt: bool = True  # False for a deferral that was not a delivery attempt (quiet hours)


def record_outcomes(conn: Connection, outcomes: Sequence[Outcome], meta: dict[int, dict[str, Any]]) -> None:
    """Write a batch of outcomes to the ledger and append one event each.

    Only pending rows change: an outcome replayed after a crash cannot move a final row back."""
    if not outcomes:
        return
    now = utcnow()
    pending = [MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value, MessageStatus.HELD.value]
    sent = [o.message_id for o in outcomes if o.status == MessageStatus.SENT]
    for chunk in _chunks(sent, 900):
        conn.execute(
            update(messages)
            .where(messages.c.id.in_(chunk), messages.c.status.in_(pending))
            .values(status=MessageStatus.SENT, sent_at=now, updated_at=now, attempts=messages.c.attempts + 1,
                    last_code=250)
        )
    for o in outcomes:
        if o.status == MessageStatus.SENT:
            continue
        values: dict[str, Any] = {
            "status": o.status, "updated_at": now, "last_code": o.code, "last_status": o.enhanced,
            "last_error": (o.error or "")[:1000], "next_attempt_at": o.next_attempt_at,
        }
        if o.status in (MessageStatus.DEFERRED, MessageStatus.FAILED) and o.counts_attempt:
            values["attempts"] = messages.c.attempts + 1
        conn.execute(
            update(messages).where(messages.c.id == o.message_id, messages.c.status.in_(pending)).values(**values)
        )
    conn.execute(
        insert(events),
        [
            {
                "account_id": meta[o.message_id]["account_id"],
                "message_id": o.message_id,
                "campaign_id": meta[o.message_id]["campaign_id"],
                "contact_id": meta[o.message_id]["contact_id"],
                "type": EventType(o.status.value) if o.status.value in EventType.__members__.values()
                else EventType.FAILED,
                "recipient_domain": meta[o.message_id]["recipient_domain"],
                "data": {"code": o.code, "status": o.enhanced, "error": o.error} if o.code or o.error else None,
                "created_at": now,
            }
            for o in outcomes
            if o.message_id in meta
        ],
    )


def message_statuses(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(list(ids), 900):
        out.update(
            {mid: st for mid, st in conn.execute(select(messages.c.id, messages.c.status).where(
                messages.c.id.in_(chunk)))}
        )
    return out


def pending_messages(conn: Connection, after_id: int, limit: int,
                     statuses: Iterable[MessageStatus] = (MessageStatus.QUEUED, MessageStatus.DEFERRED),
                     ) -> list[PendingMessage]:
    rows = conn.execute(
        select(messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.kind)
        .where(messages.c.id > after_id, messages.c.status.in_([s.value for s in statuses]))
        .order_by(messages.c.id)
        .limit(limit)
    )
    return [PendingMessage(r.id, r.account_id, r.campaign_id, MessageKind(r.kind)) for r in rows]


def get_message(conn: Connection, account_id: int, message_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(messages).where(messages.c.account_id == account_id, messages.c.id == message_id)
    ).first()
    if row is None:
        return None
    d = dict(row._mapping)
    for k in ("queued_at", "sent_at", "updated_at", "next_attempt_at"):
        d[k] = as_utc(d[k])
    d.pop("payload", None)
    return d


def status_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(messages.c.status, func.count()).where(messages.c.campaign_id == campaign_id)
        .group_by(messages.c.status)
    )
    return {status: n for status, n in rows}


def cancel_pending(conn: Connection, campaign_id: int) -> int:
    now = utcnow()
    return int(conn.execute(
        update(messages)
        .where(messages.c.campaign_id == campaign_id,
               messages.c.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value,
                                      MessageStatus.HELD.value]))
        .values(status=MessageStatus.CANCELLED, updated_at=now)
    ).rowcount or 0)


def complete_finished_campaigns(conn: Connection) -> list[int]:
    """Mark as completed every sending campaign whose fan-out is done and which has nothing pending."""
    pending = select(messages.c.id).where(
        and_(messages.c.campaign_id == campaigns.c.id,
             messages.c.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value,
                                    MessageStatus.HELD.value]))
    ).exists()
    ids = list(conn.execute(
        select(campaigns.c.id).where(campaigns.c.status == "sending", campaigns.c.fanout_done.is_(True), ~pending)
    ).scalars())
    if ids:
        conn.execute(update(campaigns).where(campaigns.c.id.in_(ids), campaigns.c.status == "sending")
                     .values(status="completed", completed_at=utcnow()))
    return ids


def suppressed_addresses(conn: Connection, account_id: int, channel: Channel,
                         addresses: Sequence[str], hasher: AddressHasher | None = None) -> dict[str, str]:
    """{address: reason} of the suppressed ones; with `hasher`, erased addresses (kept only as a keyed hash,
    issue 5) match too."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(addresses), 900):
        rows = conn.execute(
            select(suppressions.c.address, suppressions.c.reason).where(
                suppressions.c.account_id == account_id, suppressions.c.channel == channel,
                suppressions.c.address.in_(chunk),
            )
        )
        out.update({address: reason for address, reason in rows})
    if hasher is not None:
        out.update(erased_addresses(conn, account_id, channel, [a for a in addresses if a not in out], hasher))
    return out


def erased_addresses(conn: Connection, account_id: int, channel: Channel, addresses: Sequence[str],
                     hasher: AddressHasher) -> dict[str, str]:
    """{address: reason} of the addresses whose keyed hash is on the suppression list (erased contacts)."""
    out: dict[str, str] = {}
    for chunk in _chunks(list(addresses), 400):
        by_hash = hasher.candidates(channel, chunk)
        rows = conn.execute(
            select(suppressions.c.address, suppressions.c.reason).where(
                suppressions.c.account_id == account_id, suppressions.c.channel == channel,
                suppressions.c.address.in_(list(by_hash)),
            )
        )
        out.update({by_hash[h]: reason for h, reason in rows})
    return out


def add_suppression(conn: Connection, account_id: int, channel: Channel, address: str,
                    reason: SuppressionReason, source: str, campaign_id: int | None = None,
                    message_id: int | None = None) -> bool:
    """Suppress an address for the account; returns False when it was already suppressed (idempotent)."""
    inserted = conn.execute(
        _ins(conn, suppressions).values(
            account_id=account_id, channel=channel, address=address.lower() if channel == Channel.EMAIL
            else address, reason=reason, source=source, campaign_id=campaign_id, message_id=message_id,
            created_at=utcnow(),
        ).on_conflict_do_nothing().returning(suppressions.c.id)
    ).first()
    return inserted is not None


def list_suppressions(conn: Connection, account_id: int, after_id: int, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(suppressions).where(suppressions.c.account_id == account_id, suppressions.c.id > after_id)
        .order_by(suppressions.c.id).limit(limit)
    )
    out = []
    for r in rows:
        d = dict(r._mapping)
        d.pop("account_id")
        d["created_at"] = as_utc(d["created_at"])
        out.append(d)
    return out


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
