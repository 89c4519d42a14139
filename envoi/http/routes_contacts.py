"""Contacts: upsert one, import many (streamed NDJSON or CSV with a per-line report), consents, lists."""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.engine import Connection

from crm import accounts as account_repo
from crm import contacts as repo
from crm import unsubscribes  # issue 5 (list_suppressions with filters; was crm.ledger)
from crm.domain import Channel, ConsentStatus, LegalBasis, SuppressionReason
from crm.schema import lists as lists_table
from envoi.http.deps import Services, current_account, services
from envoi.http.problems import Problem, not_found
from envoi.http.schemas import ConsentIn, ContactIn, ListIn, MembersIn
from envoi.http.schemas_privacy import SuppressionFilters  # issue 5
from guardrails.sensitive import Finding, scan_fields  # issue 3
from sender.address_failures import histories  # issue 3

router = APIRouter(prefix="/v1", tags=["contacts"])

IMPORT_BATCH = 1000
MAX_REPORTED_ERRORS = 1000


def _data(c: ContactIn) -> repo.ContactData:
    return repo.ContactData(email=c.email, mobile=c.mobile, first_name=c.first_name, last_name=c.last_name,
                            birth_date=c.birth_date, crm_id=c.crm_id, cookie_id=c.cookie_id, locale=c.locale,
                            attributes=c.attributes)


def _consent(c: ConsentIn) -> repo.ConsentRecord:
    return repo.ConsentRecord(channel=Channel(c.channel), status=ConsentStatus(c.status), source=c.source,
                              legal_basis=LegalBasis(c.legal_basis), wording=c.wording, ip=c.ip,
                              user_agent=c.user_agent, given_at=c.given_at, double_opt_in_at=c.double_opt_in_at)


def _key(c: ContactIn) -> str:
    return c.email if c.email else f"crm:{c.crm_id}"


def _owned_lists(conn: Connection, account_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return set(conn.execute(select(lists_table.c.id).where(
        lists_table.c.account_id == account_id, lists_table.c.id.in_(ids))).scalars())


def _write_batch(conn: Connection, account_id: int, batch: list[ContactIn], extra_list: int | None) -> dict[str, int]:
    ids = repo.upsert_contacts(conn, account_id, [_data(c) for c in batch])
    repo.record_consents(conn, account_id, [(ids[_key(c)], _consent(x)) for c in batch for x in c.consents])
    wanted = {lid for c in batch for lid in c.lists}
    owned = _owned_lists(conn, account_id, wanted)
    missing = wanted - owned
    if missing:
        raise Problem(422, "validation", "Unknown list", f"no list {sorted(missing)[0]} in your account",
                      field="lists")
    members: dict[int, list[int]] = {}
    for c in batch:
        for lid in ([extra_list] if extra_list else []) + c.lists:
            members.setdefault(lid, []).append(ids[_key(c)])
    for lid, cids in members.items():
        repo.add_members(conn, lid, cids)
    return ids


class SensitiveDataError(ValueError):
    """issue 3: a contact attribute holds a card number, an IBAN or a NIR (contract: never stored)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.kind.value.replace('_', ' ')} ({finding.masked}) must not be stored on the "
                         "platform")
        self.field = finding.field


def _check_sensitive(c: ContactIn, line: int | None = None) -> None:
    findings = scan_fields({"attributes": c.attributes or {}}, line=line)
    if findings:
        raise SensitiveDataError(findings[0])


def _check_identity(c: ContactIn) -> None:
    if not c.email and not c.crm_id and not c.mobile:
        raise ValueError("a contact needs an email, a mobile or a crm_id")
    if not c.email and not c.crm_id:
        raise ValueError("a contact without email needs a crm_id to be updated later")


@router.post("/contacts", status_code=200)
def upsert_contact(body: ContactIn, account: account_repo.Account = Depends(current_account),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    try:
        _check_identity(body)
    except ValueError as exc:
        raise Problem(422, "validation", "Invalid contact", str(exc), field="email") from None
    try:
        _check_sensitive(body)  # issue 3
    except SensitiveDataError as exc:
        raise Problem(422, "sensitive-data", "Sensitive data refused", str(exc), field=exc.field) from None
    with svc.engine.begin() as conn:
        ids = _write_batch(conn, account.id, [body], None)
        contact = repo.get_contact(conn, account.id, ids[_key(body)])
    return contact or {}


@router.get("/contacts/{contact_id}")
def get_contact(contact_id: int, account: account_repo.Account = Depends(current_account),
                svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        contact = repo.get_contact(conn, account.id, contact_id)
        if contact is None:
            raise not_found("contact", "contact_id")
        contact["consents"] = repo.consent_history(conn, account.id, contact_id)
    return contact


@router.get("/contacts")
def find_contact(email: str | None = Query(None), crm_id: str | None = Query(None),
                 account: account_repo.Account = Depends(current_account),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    if not email and not crm_id:
        raise Problem(422, "validation", "Missing lookup key", "give email or crm_id", field="email")
    with svc.engine.connect() as conn:
        contact = repo.find_contact(conn, account.id, email=email.lower() if email else None, crm_id=crm_id)
    if contact is None:
        raise not_found("contact", "email" if email else "crm_id")
    return contact


@router.post("/contacts/{contact_id}/consents", status_code=201)
def add_consent(contact_id: int, body: ConsentIn, account: account_repo.Account = Depends(current_account),
                svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        if repo.get_contact(conn, account.id, contact_id) is None:
            raise not_found("contact", "contact_id")
        repo.record_consents(conn, account.id, [(contact_id, _consent(body))])
        history = repo.consent_history(conn, account.id, contact_id)
    return history[-1]


async def _lines(request: Request) -> AsyncIterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    async for chunk in request.stream():
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.rstrip("\r")


_CSV_CONSENT = ("consent_source", "consent_wording", "consent_ip", "consent_at", "consent_legal_basis")


def _csv_record(header: list[str], line: str) -> dict[str, Any]:
    values = next(csv.reader(io.StringIO(line)))
    if len(values) != len(header):
        raise ValueError(f"expected {len(header)} columns, got {len(values)}")
    row = {k: v for k, v in zip(header, values, strict=True) if v != ""}
    record: dict[str, Any] = {k: v for k, v in row.items()
                              if k not in _CSV_CONSENT and not k.startswith(("attr.", "consent_"))}
    attrs = {k[5:]: v for k, v in row.items() if k.startswith("attr.")}
    if attrs:
        record["attributes"] = attrs
    consents = []
    for channel in ("email", "sms"):
        status = row.get(f"consent_{channel}")
        if status:
            consents.append({"channel": channel, "status": status,
                             "source": row.get("consent_source", "csv import"),
                             "wording": row.get("consent_wording"), "ip": row.get("consent_ip"),
                             "given_at": row.get("consent_at"),
                             "legal_basis": row.get("consent_legal_basis", "opt_in")})
    if consents:
        record["consents"] = [{k: v for k, v in c.items() if v is not None} for c in consents]
    return record


def _first_error(exc: ValidationError) -> tuple[str, str]:
    e = exc.errors()[0]
    field = ".".join(str(x) for x in e.get("loc", ())) or "line"
    return field, e.get("msg", "invalid")


@router.post("/contacts/import")
async def import_contacts(request: Request, list_id: int | None = Query(None, ge=1, le=2**63 - 1),
                          format: str | None = Query(None, pattern="^(ndjson|csv)$"),
                          account: account_repo.Account = Depends(current_account),
                          svc: Services = Depends(services)) -> dict[str, Any]:
    """Stream NDJSON (one contact per line) or CSV (header line first); each bad line is reported, not fatal.

    CSV columns: the contact fields, `attr.<name>` for custom attributes, `consent_email` / `consent_sms`
    (granted|withdrawn) with `consent_source`, `consent_wording`, `consent_ip`, `consent_at`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = format or ("csv" if ctype in ("text/csv", "application/csv") else "ndjson")
    if list_id is not None:
        with svc.engine.connect() as conn:
            if not _owned_lists(conn, account.id, {list_id}):
                raise not_found("list", "list_id")
    errors: list[dict[str, Any]] = []
    error_count = imported = lines = 0
    batch: list[ContactIn] = []
    header: list[str] | None = None

    async def flush() -> None:
        nonlocal imported, batch
        if batch:
            current, batch = batch, []
            await asyncio.to_thread(_flush, svc, account.id, current, list_id)
            imported += len(current)

    async for raw in _lines(request):
        lines += 1
        if not raw.strip():
            continue
        if fmt == "csv" and header is None:
            header = [h.strip() for h in next(csv.reader(io.StringIO(raw)))]
            continue
        try:
            record = _csv_record(header or [], raw) if fmt == "csv" else json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError("each line must be a JSON object")
            contact = ContactIn.model_validate(record)
            _check_identity(contact)
            _check_sensitive(contact, lines)  # issue 3
        except ValidationError as exc:
            field, msg = _first_error(exc)
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append({"line": lines, "field": field, "detail": msg})
            continue
        except ValueError as exc:
            error_count += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append({"line": lines, "field": getattr(exc, "field", "line"), "detail": str(exc)})
            continue
        batch.append(contact)
        if len(batch) >= IMPORT_BATCH:
            await flush()
    await flush()
    return {"lines": lines, "imported": imported, "error_count": error_count, "errors": errors}


def _flush(svc: Services, account_id: int, batch: list[ContactIn], list_id: int | None) -> None:
    with svc.engine.begin() as conn:
        _write_batch(conn, account_id, batch, list_id)


@router.post("/lists", status_code=201)
def create_list(body: ListIn, account: account_repo.Account = Depends(current_account),
                svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        if conn.execute(select(lists_table.c.id).where(lists_table.c.account_id == account.id,
                                                       lists_table.c.name == body.name)).first():
            raise Problem(409, "conflict", "List exists", f"a list named {body.name!r} exists", field="name")
        lid = repo.create_list(conn, account.id, body.name)
        return repo.get_list(conn, account.id, lid) or {}


@router.get("/lists")
def get_lists(account: account_repo.Account = Depends(current_account),
              svc: Services = Depends(services)) -> list[dict[str, Any]]:
    with svc.engine.connect() as conn:
        return repo.all_lists(conn, account.id)


@router.get("/lists/{list_id}")
def get_list(list_id: int, account: account_repo.Account = Depends(current_account),
             svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        found = repo.get_list(conn, account.id, list_id)
    if found is None:
        raise not_found("list", "list_id")
    return found


@router.post("/lists/{list_id}/members")
def add_members(list_id: int, body: MembersIn, account: account_repo.Account = Depends(current_account),
                svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        if repo.get_list(conn, account.id, list_id) is None:
            raise not_found("list", "list_id")
        owned = repo.owned_contact_ids(conn, account.id, body.contact_ids)
        foreign = [cid for cid in body.contact_ids if cid not in owned]
        if foreign:
            raise Problem(422, "validation", "Unknown contact", f"no contact {foreign[0]} in your account",
                          field="contact_ids")
        added = repo.add_members(conn, list_id, body.contact_ids)
    return {"added": added}


@router.delete("/lists/{list_id}/members/{contact_id}", status_code=200)
def remove_member(list_id: int, contact_id: int, account: account_repo.Account = Depends(current_account),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        if repo.get_list(conn, account.id, list_id) is None:
            raise not_found("list", "list_id")
        removed = repo.remove_member(conn, list_id, contact_id)
    return {"removed": removed}


@router.get("/suppressions")
def get_suppressions(after: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(100, ge=1, le=1000),
                     account: account_repo.Account = Depends(current_account),
                     svc: Services = Depends(services),
                     filters: SuppressionFilters = Depends()) -> dict[str, Any]:  # issue 5: filters
    with svc.engine.connect() as conn:
        items = unsubscribes.list_suppressions(conn, account.id, after, limit, **filters.as_kwargs())  # issue 5
        # issue 3: an address disabled by the three-failure rule shows the outcomes that disabled it.
        disabled = [i["address"] for i in items if i["reason"] == SuppressionReason.DISABLED.value]
        found = histories(conn, account.id, disabled) if disabled else {}
        for i in items:
            if i["address"] in found:
                i["history"] = found[i["address"]]["history"]
    return {"items": items, "next_after": items[-1]["id"] if items else None}
