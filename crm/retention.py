"""Account termination: the restitution archive, and the purge of personal data three months later.

Archive format `envoi.account-export/1` (documented in docs/account-export.md): a ZIP file holding
`manifest.json`, `README.txt`, one NDJSON file per table (one JSON object per line, UTF-8, timestamps in ISO 8601
UTC) and `contacts.csv` (the same contacts, for spreadsheets). Rows are read in id order by pages, so the archive
of a large account is written with bounded memory."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Any

from sqlalchemy import Table, delete, select
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm.db import as_utc, utcnow
from crm.domain import AccountStatus
from crm.schema import (
    accounts,
    address_failures,
    campaigns,
    consents,
    contacts,
    events,
    idempotency_keys,
    list_members,
    lists,
    messages,
    sender_profiles,
    suppressions,
    templates,
    unsubscribe_actions,
    webhook_events,
)

ARCHIVE_FORMAT = "envoi.account-export/1"
PAGE = 1000
# (file stem, table): tables keyed by `id` and owned through `account_id`.
_TABLES: tuple[tuple[str, Table], ...] = (
    ("contacts", contacts), ("consents", consents), ("lists", lists), ("templates", templates),
    ("campaigns", campaigns), ("messages", messages), ("events", events), ("suppressions", suppressions),
    ("unsubscribe_actions", unsubscribe_actions),
)
_CSV_FIELDS = ("id", "email", "mobile", "first_name", "last_name", "birth_date", "crm_id", "cookie_id", "locale",
               "email_consent", "sms_consent", "created_at", "updated_at")

README = """Envoi account export ({fmt})

manifest.json          account, export time, row count per file
<table>.ndjson         one JSON object per line, UTF-8; timestamps ISO 8601 UTC; ids are Envoi ids
contacts.csv           the contacts again as CSV (RFC 4180, header line, UTF-8)
list_members.ndjson    {{"list_id", "contact_id", "added_at"}}
sender_profile.json    the sender identity shown in every marketing message

Tables: contacts (Annex 3 fields, current consent per channel), consents (append-only ledger with proof:
legal basis, source, wording, ip, user agent, double opt-in time), lists, list_members, templates, campaigns
(with audience report), messages (one row per recipient and campaign or transactional send), events
(delivery, bounce, complaint, open, click, unsubscribe), suppressions (addresses that must not be mailed;
erased contacts appear as `hmac1:` keyed hashes), unsubscribe_actions (what each unsubscribe changed).
"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return (as_utc(value) or value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _paged(conn: Connection, table: Table, account_id: int) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        rows = conn.execute(select(table).where(table.c.account_id == account_id, table.c.id > after)
                            .order_by(table.c.id).limit(PAGE)).all()
        for r in rows:
            yield {k: _jsonable(v) for k, v in r._mapping.items() if k != "account_id"}
        if len(rows) < PAGE:
            return
        after = rows[-1].id


def _members(conn: Connection, account_id: int) -> Iterator[dict[str, Any]]:
    q = (select(list_members).join(lists, lists.c.id == list_members.c.list_id)
         .where(lists.c.account_id == account_id).order_by(list_members.c.list_id, list_members.c.contact_id))
    for r in conn.execute(q):
        yield {k: _jsonable(v) for k, v in r._mapping.items()}


def _ndjson(zf: zipfile.ZipFile, name: str, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    with zf.open(name, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def write_account_archive(conn: Connection, account_id: int, target: IO[bytes]) -> dict[str, Any] | None:
    """Write the account's restitution archive (ZIP) to `target`; returns the manifest, None if no account."""
    account = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    if account is None:
        return None
    counts: dict[str, int] = {}
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for stem, table in _TABLES:
            counts[f"{stem}.ndjson"] = _ndjson(zf, f"{stem}.ndjson", _paged(conn, table, account_id))
        counts["list_members.ndjson"] = _ndjson(zf, "list_members.ndjson", _members(conn, account_id))
        with zf.open("contacts.csv", "w") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in _paged(conn, contacts, account_id):
                writer.writerow(row)
        profile = conn.execute(select(sender_profiles).where(sender_profiles.c.account_id == account_id)).first()
        zf.writestr("sender_profile.json", json.dumps(
            {k: _jsonable(v) for k, v in profile._mapping.items()} if profile else None, ensure_ascii=False))
        manifest = {"format": ARCHIVE_FORMAT, "exported_at": utcnow().isoformat(),
                    "account": {"id": account.id, "name": account.name, "status": account.status,
                                "terminated_at": _jsonable(account.terminated_at)},
                    "files": counts}
        zf.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
        zf.writestr("README.txt", README.format(fmt=ARCHIVE_FORMAT))
    return manifest


def terminated_accounts(conn: Connection, terminated_before: datetime) -> list[tuple[int, datetime]]:
    """(id, terminated_at) of the accounts terminated at or before the given time."""
    rows = conn.execute(select(accounts.c.id, accounts.c.terminated_at).where(
        accounts.c.status == AccountStatus.TERMINATED, accounts.c.terminated_at.is_not(None),
        accounts.c.terminated_at <= terminated_before).order_by(accounts.c.id))
    return [(int(r.id), as_utc(r.terminated_at) or r.terminated_at) for r in rows]


def purge_account(conn: Connection, account_id: int) -> dict[str, int]:
    """Delete the account's personal data (contacts and everything about them); keep the account row, its
    templates and campaigns (no personal data) and the audit log. Idempotent: a second run deletes nothing."""
    counts: dict[str, int] = {}
    for name, stmt in (
        ("events", delete(events).where(events.c.account_id == account_id)),
        ("unsubscribe_actions", delete(unsubscribe_actions).where(unsubscribe_actions.c.account_id == account_id)),
        ("messages", delete(messages).where(messages.c.account_id == account_id)),
        ("suppressions", delete(suppressions).where(suppressions.c.account_id == account_id)),
        ("list_members", delete(list_members).where(list_members.c.list_id.in_(
            select(lists.c.id).where(lists.c.account_id == account_id)))),
        ("consents", delete(consents).where(consents.c.account_id == account_id)),
        ("contacts", delete(contacts).where(contacts.c.account_id == account_id)),
        ("webhook_events", delete(webhook_events).where(webhook_events.c.account_id == account_id)),
        ("idempotency_keys", delete(idempotency_keys).where(idempotency_keys.c.account_id == account_id)),
        ("address_failures", delete(address_failures).where(address_failures.c.account_id == account_id)),
    ):
        counts[name] = int(conn.execute(stmt).rowcount or 0)
    if any(counts.values()):
        account_repo.audit(conn, account_id, "retention", "account.purged", counts)
    return counts
