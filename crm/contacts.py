"""Contacts (the fields of the contract's Annex 3), the consent ledger, lists and list membership."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm.db import as_utc, utcnow
from crm.domain import Channel, ConsentStatus, LegalBasis
from crm.schema import consents, contacts, list_members, lists

CONTACT_FIELDS = (
    "email", "mobile", "first_name", "last_name", "birth_date", "crm_id", "cookie_id", "locale", "attributes",
)


@dataclass(frozen=True, slots=True)
class ContactData:
    """One contact as the CRM sends it (already validated and normalised by the API layer)."""

    email: str | None = None
    mobile: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    crm_id: str | None = None
    cookie_id: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    channel: Channel
    status: ConsentStatus
    source: str
    legal_basis: LegalBasis = LegalBasis.OPT_IN
    wording: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    given_at: datetime | None = None
    double_opt_in_at: datetime | None = None


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(contacts)


def _values(account_id: int, data: ContactData, now: datetime) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "email": data.email,
        "mobile": data.mobile,
        "first_name": data.first_name,
        "last_name": data.last_name,
        "birth_date": data.birth_date,
        "crm_id": data.crm_id,
        "cookie_id": data.cookie_id,
        "locale": data.locale,
        "attributes": data.attributes,
        "email_consent": ConsentStatus.NONE,
        "sms_consent": ConsentStatus.NONE,
        "created_at": now,
        "updated_at": now,
    }


def upsert_contacts(conn: Connection, account_id: int, batch: Sequence[ContactData]) -> dict[str, int]:
    """Insert or update contacts, keyed by email when present, else by CRM id.

    Returns {key: contact id} where key is the email (or "crm:" + crm_id). Consent columns are never touched
    by an upsert: consent changes only through the ledger."""
    now = utcnow()
    by_email = [c for c in batch if c.email]
    by_crm = [c for c in batch if not c.email and c.crm_id]
    ids: dict[str, int] = {}
    for group, target in ((by_email, "email"), (by_crm, "crm_id")):
        if not group:
            continue
        # Last occurrence wins inside one batch (ON CONFLICT cannot touch the same row twice).
        unique = list({getattr(c, target): c for c in group}.values())
        stmt = _insert(conn)
        updatable = {
            name: stmt.excluded[name]
            for name in (*CONTACT_FIELDS, "updated_at")
            if name != target
        }
        stmt = stmt.on_conflict_do_update(index_elements=["account_id", target], set_=updatable)
        conn.execute(stmt, [_values(account_id, c, now) for c in unique])  # executemany: compiled once
        keys = [getattr(c, target) for c in unique]
        rows = conn.execute(
            select(contacts.c.id, contacts.c[target]).where(
                contacts.c.account_id == account_id, contacts.c[target].in_(keys)
            )
        )
        for cid, key in rows:
            ids[key if target == "email" else f"crm:{key}"] = cid
    return ids


def get_contact(conn: Connection, account_id: int, contact_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(contacts).where(contacts.c.account_id == account_id, contacts.c.id == contact_id)
    ).first()
    return _contact_dict(row) if row else None


def find_contact(conn: Connection, account_id: int, *, email: str | None = None,
                 crm_id: str | None = None) -> dict[str, Any] | None:
    q = select(contacts).where(contacts.c.account_id == account_id)
    q = q.where(contacts.c.email == email) if email else q.where(contacts.c.crm_id == crm_id)
    row = conn.execute(q).first()
    return _contact_dict(row) if row else None


def _contact_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d.pop("account_id", None)
    for k in ("created_at", "updated_at"):
        d[k] = as_utc(d[k])
    return d


def record_consents(
    conn: Connection, account_id: int, entries: Iterable[tuple[int, ConsentRecord]]
) -> int:
    """Append consent entries to the ledger and update each contact's current state. Nothing is overwritten."""
    now = utcnow()
    rows = [
        {
            "account_id": account_id,
            "contact_id": contact_id,
            "channel": rec.channel,
            "status": rec.status,
            "legal_basis": rec.legal_basis,
            "source": rec.source,
            "wording": rec.wording,
            "ip": rec.ip,
            "user_agent": rec.user_agent,
            "double_opt_in_at": rec.double_opt_in_at,
            "given_at": rec.given_at or now,
            "recorded_at": now,
        }
        for contact_id, rec in entries
    ]
    if not rows:
        return 0
    conn.execute(insert(consents), rows)
    for channel in Channel:
        column = f"{channel.value}_consent"
        for status in (ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN):
            ids = [int(str(r["contact_id"])) for r in rows if r["channel"] == channel and r["status"] == status]
            for chunk in _chunks(ids, 900):
                conn.execute(
                    update(contacts)
                    .where(contacts.c.account_id == account_id, contacts.c.id.in_(chunk))
                    .values({column: status})
                )
    return len(rows)


def consent_history(conn: Connection, account_id: int, contact_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(consents)
        .where(consents.c.account_id == account_id, consents.c.contact_id == contact_id)
        .order_by(consents.c.id)
    )
    out = []
    for row in rows:
        d = dict(row._mapping)
        d.pop("account_id")
        for k in ("given_at", "recorded_at", "double_opt_in_at"):
            d[k] = as_utc(d[k])
        out.append(d)
    return out


def create_list(conn: Connection, account_id: int, name: str) -> int:
    return int(conn.execute(
        insert(lists).values(account_id=account_id, name=name, created_at=utcnow()).returning(lists.c.id)
    ).scalar_one())


def get_list(conn: Connection, account_id: int, list_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(lists).where(lists.c.account_id == account_id, lists.c.id == list_id)).first()
    if row is None:
        return None
    size = conn.execute(select(func.count()).where(list_members.c.list_id == list_id)).scalar_one()
    return {"id": row.id, "name": row.name, "created_at": as_utc(row.created_at), "size": size}


def all_lists(conn: Connection, account_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(select(lists.c.id).where(lists.c.account_id == account_id).order_by(lists.c.id))
    return [d for (lid,) in rows if (d := get_list(conn, account_id, lid))]


def owned_contact_ids(conn: Connection, account_id: int, contact_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for chunk in _chunks(list(contact_ids), 900):
        found.update(
            conn.execute(
                select(contacts.c.id).where(contacts.c.account_id == account_id, contacts.c.id.in_(chunk))
            ).scalars()
        )
    return found


def add_members(conn: Connection, list_id: int, contact_ids: Iterable[int]) -> int:
    """Add contacts (already checked to belong to the list's account); existing members are left alone."""
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(list_members)
    now = utcnow()
    rows = [{"list_id": list_id, "contact_id": cid, "added_at": now} for cid in contact_ids]
    if not rows:
        return 0
    # executemany (compiled once, batched by insertmanyvalues); RETURNING counts the rows really added.
    return len(conn.execute(ins.on_conflict_do_nothing().returning(list_members.c.contact_id), rows).all())


def remove_member(conn: Connection, list_id: int, contact_id: int) -> bool:
    return bool(
        conn.execute(
            delete(list_members).where(list_members.c.list_id == list_id, list_members.c.contact_id == contact_id)
        ).rowcount
    )


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
