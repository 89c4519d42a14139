"""SMS repositories (issue 6): per-account SMS settings, the Twilio SID and delivery status of each SMS, contacts
by mobile number, and the re-subscription that a START reply may undo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm.accounts import audit
from crm.db import utcnow
from crm.domain import Channel, ConsentStatus, MessageStatus, SuppressionReason
from crm.schema import accounts, contacts, events, messages, sms_messages, suppressions

# Twilio's delivery statuses in the order they progress: a late "sent" never overwrites "delivered".
_RANK = {"accepted": 0, "queued": 0, "scheduled": 0, "sending": 1, "sent": 2,
         "delivered": 3, "undelivered": 3, "failed": 3, "canceled": 3}
FINAL_DELIVERY = frozenset({"delivered", "undelivered", "failed", "canceled"})


def _ins(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# -- settings -------------------------------------------------------------------------------------------------


def get_sms_settings(conn: Connection, account_id: int) -> dict[str, Any]:
    settings = conn.execute(select(accounts.c.settings).where(accounts.c.id == account_id)).scalar()
    return dict((settings or {}).get("sms") or {})


def put_sms_settings(conn: Connection, account_id: int, raw: dict[str, Any], actor: str) -> None:
    settings = dict(conn.execute(select(accounts.c.settings).where(accounts.c.id == account_id)).scalar() or {})
    settings["sms"] = raw  # other slices' keys in `settings` are kept as they are
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(settings=settings))
    audit(conn, account_id, actor, "sms_settings.updated", {k: v for k, v in raw.items() if k != "window"})


# -- hand-offs and delivery status ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handoff:
    message_id: int
    account_id: int
    sid: str | None
    encoding: str
    segments: int
    status: str


def record_handoffs(conn: Connection, rows: Sequence[Handoff]) -> None:
    """Remember the SID, encoding and segments of each SMS Twilio accepted."""
    if not rows:
        return
    now = utcnow()
    stmt = _ins(conn, sms_messages).values([
        {"message_id": h.message_id, "account_id": h.account_id, "sid": h.sid, "encoding": h.encoding,
         "segments": h.segments, "delivery_status": h.status, "updated_at": now}
        for h in rows
    ])
    # A status callback may have arrived first and created the row: keep its status, add what only we know.
    conn.execute(stmt.on_conflict_do_update(index_elements=["message_id"], set_={
        "sid": stmt.excluded.sid, "encoding": stmt.excluded.encoding, "segments": stmt.excluded.segments}))


def find_for_callback(conn: Connection, message_id: int | None, sid: str) -> dict[str, Any] | None:
    """The SMS ledger row a status callback is about: by the message id of the callback URL, else by SID."""
    q = (select(messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.contact_id,
                messages.c.recipient, messages.c.recipient_domain, messages.c.status, messages.c.kind,
                sms_messages.c.sid, sms_messages.c.delivery_status)
         .select_from(messages.outerjoin(sms_messages, sms_messages.c.message_id == messages.c.id))
         .where(messages.c.channel == Channel.SMS))
    row = None
    if message_id is not None:
        row = conn.execute(q.where(messages.c.id == message_id)).first()
    if row is None and sid:
        row = conn.execute(q.where(sms_messages.c.sid == sid)).first()
    return dict(row._mapping) if row else None


def apply_delivery_status(conn: Connection, m: dict[str, Any], sid: str, status: str,
                          error_code: int | None) -> bool:
    """Record Twilio's status for the message; False when it is stale or a repeat (nothing to count again)."""
    current = m.get("delivery_status")
    if current in FINAL_DELIVERY or (current is not None and _RANK.get(status, 0) < _RANK.get(current, 0)):
        return False  # a final status is never revised (Twilio may repeat or reorder callbacks)
    now = utcnow()
    values = {"sid": sid or m.get("sid"), "delivery_status": status, "error_code": error_code, "updated_at": now}
    if current is None and m.get("sid") is None:
        conn.execute(_ins(conn, sms_messages).values(
            message_id=m["id"], account_id=m["account_id"], encoding="", segments=0, **values
        ).on_conflict_do_nothing())
    conn.execute(update(sms_messages).where(sms_messages.c.message_id == m["id"]).values(**values))
    if status in {"undelivered", "failed"}:
        # Accepted by Twilio, then lost: for the ledger this message failed (like a bounce after a 250).
        conn.execute(update(messages).where(messages.c.id == m["id"]).values(
            status=MessageStatus.FAILED, last_code=error_code, updated_at=now,
            last_error=f"twilio {status}" + (f": error {error_code}" if error_code else "")))
    return True


# -- inbound messages -----------------------------------------------------------------------------------------


def accounts_for_inbound(conn: Connection, to: str, messaging_service_sid: str) -> list[int]:
    """Accounts that send from the number (or Messaging Service) an inbound SMS was addressed to."""
    out = []
    for aid, settings in conn.execute(select(accounts.c.id, accounts.c.settings)):
        sms = (settings or {}).get("sms") or {}
        if (to and sms.get("from") == to) or (messaging_service_sid
                                              and sms.get("messaging_service_sid") == messaging_service_sid):
            out.append(int(aid))
    return out


def sms_consents(conn: Connection, account_id: int, mobile: str) -> list[ConsentStatus]:
    """Current SMS consent of every contact of the account with this mobile number."""
    rows = conn.execute(select(contacts.c.sms_consent).where(contacts.c.account_id == account_id,
                                                             contacts.c.mobile == mobile))
    return [ConsentStatus(r or "none") for (r,) in rows]


def remove_suppression(conn: Connection, account_id: int, mobile: str, reasons: Iterable[SuppressionReason],
                       sources: Iterable[str]) -> bool:
    """Delete the number's SMS suppression when it has one of `reasons` and came from one of `sources`."""
    res = conn.execute(delete(suppressions).where(
        suppressions.c.account_id == account_id, suppressions.c.channel == Channel.SMS,
        suppressions.c.address == mobile, suppressions.c.reason.in_([r.value for r in reasons]),
        suppressions.c.source.in_(list(sources))))
    return bool(res.rowcount)


def suppression_of(conn: Connection, account_id: int, mobile: str) -> dict[str, Any] | None:
    row = conn.execute(select(suppressions.c.reason, suppressions.c.source).where(
        suppressions.c.account_id == account_id, suppressions.c.channel == Channel.SMS,
        suppressions.c.address == mobile)).first()
    return dict(row._mapping) if row else None


def contact_by_mobile(conn: Connection, account_id: int, mobile: str) -> int | None:
    return conn.execute(select(contacts.c.id).where(contacts.c.account_id == account_id,
                                                    contacts.c.mobile == mobile).limit(1)).scalar()


def add_event(conn: Connection, m: dict[str, Any], type_: str, data: dict[str, Any] | None) -> None:
    """Append one event about an SMS (delivery report, carrier failure): the counters read events."""
    conn.execute(insert(events).values(
        account_id=m["account_id"], message_id=m["id"], campaign_id=m["campaign_id"], contact_id=m["contact_id"],
        type=type_, recipient_domain=m["recipient_domain"], data=data, created_at=utcnow()))
