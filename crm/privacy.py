"""Data-subject rights on one contact: access/portability export (GDPR arts. 15 and 20) and erasure (art. 17).

Erasure deletes the profile (its consents and list memberships cascade), anonymises the messages and events that
were about the contact (rows stay for the campaign statistics, with no address, no payload, no error text and no
contact link), cancels what was still queued, and replaces every suppression of the addresses by a keyed hash
(`crm.address_hash`): a later import of the same address is still suppressed, without keeping the address."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Text, cast, delete, false, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm.address_hash import AddressHasher, normalise
from crm.contacts import consent_history, get_contact
from crm.db import as_utc, utcnow
from crm.domain import Channel, MessageStatus, SuppressionReason
from crm.schema import (
    address_failures,
    contacts,
    events,
    list_members,
    lists,
    messages,
    suppressions,
    unsubscribe_actions,
    webhook_events,
)

EXPORT_FORMAT = "envoi.contact-export/1"
_MESSAGE_FIELDS = ("id", "campaign_id", "channel", "kind", "recipient", "status", "attempts", "last_code",
                   "last_status", "last_error", "queued_at", "sent_at", "updated_at")


def _rows(conn: Connection, query: Any, times: tuple[str, ...] = ("created_at",)) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute(query):
        d = dict(r._mapping)
        d.pop("account_id", None)
        for k in times:
            if k in d:
                d[k] = as_utc(d[k])
        out.append(d)
    return out


def _addresses(contact: dict[str, Any]) -> list[tuple[Channel, str]]:
    return [(ch, normalise(ch.value, a)) for ch, a in ((Channel.EMAIL, contact.get("email")),
                                                      (Channel.SMS, contact.get("mobile"))) if a]


def _message_filter(account_id: int, contact_id: int, addresses: list[tuple[Channel, str]]) -> Any:
    clauses = [messages.c.contact_id == contact_id]
    clauses += [(messages.c.channel == ch) & (messages.c.recipient == a) for ch, a in addresses]
    return (messages.c.account_id == account_id) & or_(*clauses)


def export_contact(conn: Connection, account_id: int, contact_id: int) -> dict[str, Any] | None:
    """Everything Envoi holds about one contact, as one JSON document (format `envoi.contact-export/1`)."""
    contact = get_contact(conn, account_id, contact_id)
    if contact is None:
        return None
    addresses = _addresses(contact)
    msgs = _rows(conn, select(*[messages.c[f] for f in _MESSAGE_FIELDS])
                 .where(_message_filter(account_id, contact_id, addresses)).order_by(messages.c.id),
                 ("queued_at", "sent_at", "updated_at"))
    ids = [m["id"] for m in msgs]
    evts = _rows(conn, select(events).where(
        events.c.account_id == account_id,
        or_(events.c.contact_id == contact_id, events.c.message_id.in_(ids) if ids else false()),
    ).order_by(events.c.id))
    member_of = _rows(conn, select(lists.c.id, lists.c.name, list_members.c.added_at)
                      .select_from(list_members.join(lists, lists.c.id == list_members.c.list_id))
                      .where(list_members.c.contact_id == contact_id, lists.c.account_id == account_id),
                      ("added_at",))
    supp = _rows(conn, select(suppressions).where(
        suppressions.c.account_id == account_id,
        or_(*[(suppressions.c.channel == ch) & (suppressions.c.address == a) for ch, a in addresses]),
    ).order_by(suppressions.c.id)) if addresses else []
    actions = _rows(conn, select(unsubscribe_actions).where(
        unsubscribe_actions.c.account_id == account_id, unsubscribe_actions.c.contact_id == contact_id,
    ).order_by(unsubscribe_actions.c.id), ("created_at", "undone_at"))
    return {
        "format": EXPORT_FORMAT, "exported_at": utcnow(), "contact": contact,
        "consents": consent_history(conn, account_id, contact_id), "lists": member_of,
        "suppressions": supp, "unsubscribe_actions": actions, "messages": msgs, "events": evts,
    }


def _ins(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def erase_contact(conn: Connection, account_id: int, contact_id: int, hasher: AddressHasher, actor: str
                  ) -> dict[str, int] | None:
    """Erase one contact (see the module docstring); returns counts, or None if there is no such contact."""
    contact = get_contact(conn, account_id, contact_id)
    if contact is None:
        return None
    now = utcnow()
    addresses = _addresses(contact)
    rows = conn.execute(select(messages.c.id, messages.c.channel, messages.c.recipient)
                        .where(_message_filter(account_id, contact_id, addresses))).all()
    by_recipient: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:
        by_recipient[(r.channel, r.recipient)].append(r.id)
    ids = [r.id for r in rows]
    for chunk in _chunks(ids, 500):
        conn.execute(update(events).where(events.c.account_id == account_id, events.c.message_id.in_(chunk))
                     .values(contact_id=None, data=None, recipient_domain=None))
        conn.execute(update(messages).where(messages.c.id.in_(chunk), messages.c.status.in_(
            [MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value, MessageStatus.HELD.value]))
            .values(status=MessageStatus.CANCELLED, updated_at=now))
    conn.execute(update(events).where(events.c.account_id == account_id, events.c.contact_id == contact_id)
                 .values(contact_id=None, data=None, recipient_domain=None))
    for (channel, recipient), mids in by_recipient.items():
        for chunk in _chunks(mids, 500):
            conn.execute(update(messages).where(messages.c.id.in_(chunk)).values(
                recipient=hasher.hash(channel, recipient), recipient_domain="", payload=None, last_error=None,
                contact_id=None, updated_at=now))
    # Every address the contact was reached at leaves the suppression list in clear and stays as a hash.
    hashed = {(Channel(ch), normalise(ch, rcpt)) for ch, rcpt in by_recipient} | set(addresses)
    for channel, address in hashed:
        conn.execute(delete(suppressions).where(suppressions.c.account_id == account_id,
                                                suppressions.c.channel == channel, suppressions.c.address == address))
        conn.execute(delete(address_failures).where(address_failures.c.account_id == account_id,
                                                    address_failures.c.address == address))
        conn.execute(_ins(conn, suppressions).values(
            account_id=account_id, channel=channel, address=hasher.hash(channel.value, address),
            reason=SuppressionReason.ERASED, source="erasure", created_at=now).on_conflict_do_nothing())
    conn.execute(update(unsubscribe_actions).where(unsubscribe_actions.c.account_id == account_id,
                                                   unsubscribe_actions.c.contact_id == contact_id)
                 .values(contact_id=None))
    _anonymise_webhooks(conn, account_id, contact_id, hashed, hasher)
    conn.execute(delete(contacts).where(contacts.c.account_id == account_id, contacts.c.id == contact_id))
    account_repo.audit(conn, account_id, actor, "contact.erased",
                       {"contact_id": contact_id, "messages": len(ids), "hashed_addresses": len(hashed)})
    return {"messages_anonymised": len(ids), "suppressions_hashed": len(hashed)}


def _anonymise_webhooks(conn: Connection, account_id: int, contact_id: int, addresses: set[tuple[Channel, str]],
                        hasher: AddressHasher) -> None:
    """Outbox events that name the contact's addresses (`contact.unsubscribed`...) keep their shape, not the address
    (found by a text match on the JSON, the same on SQLite and PostgreSQL, then checked field by field)."""
    names = {address: hasher.hash(channel.value, address) for channel, address in addresses}
    for address, hashed in names.items():
        rows = conn.execute(select(webhook_events.c.id, webhook_events.c.payload).where(
            webhook_events.c.account_id == account_id,
            cast(webhook_events.c.payload, Text).like(f"%{address}%"))).all()
        for r in rows:
            payload = {k: (hashed if v == address else v) for k, v in (r.payload or {}).items()}
            if payload.get("contact_id") == contact_id:
                payload["contact_id"] = None
            conn.execute(update(webhook_events).where(webhook_events.c.id == r.id).values(payload=payload))


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
