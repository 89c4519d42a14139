"""Sending domains (issue 7): register (keys generated, records to publish), show, verify against DNS, rotate the
DKIM key by selector."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from crm import accounts as account_repo
from crm import sending_domains as repo
from envoi.http.deps import Services, current_account, services
from envoi.http.problems import Problem, not_found
from envoi.http.schemas import Strict
from envoi.settings import Settings
from sender import domains
from sender.dkim_keys import PlatformKeyring
from sender.dns_resolvers import sync_resolver

router = APIRouter(prefix="/v1", tags=["sending domains"])


class DomainIn(Strict):
    """Unknown fields refused, no NUL characters (see `Strict`)."""
    domain: str = Field(min_length=3, max_length=253)
    ed25519: bool | None = None  # also an Ed25519 key (dual signature); default: the platform setting


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _domain_name(value: str) -> str | None:
    """The A-label form of a registrable domain name (IDNA, RFC 5890), or None."""
    try:
        name = value.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = name.split(".")
    return name if len(labels) >= 2 and all(_LABEL.match(x) for x in labels) else None


def keyring(settings: Settings) -> PlatformKeyring:
    return PlatformKeyring.parse(settings.dkim_platform_keys)


def policy(settings: Settings) -> domains.DomainPolicy:
    return domains.DomainPolicy(settings.spf_include, settings.bounce_domain, settings.dkim_ed25519)


def _get(svc: Services, account_id: int, domain_id: int) -> repo.Domain:
    with svc.engine.connect() as conn:
        d = repo.get_domain(conn, account_id, domain_id)
    if d is None:
        raise not_found("sending domain", "domain_id")
    return d


@router.post("/domains", status_code=201)
async def create_domain(body: DomainIn, account: account_repo.Account = Depends(current_account),
                        svc: Services = Depends(services)) -> dict[str, Any]:
    name = _domain_name(body.domain)
    if name is None:
        raise Problem(422, "validation", "Invalid domain",
                      f"{body.domain!r} is not a domain name such as example.fr", field="domain")
    ring = keyring(svc.settings)
    ed = svc.settings.dkim_ed25519 if body.ed25519 is None else body.ed25519

    def run() -> dict[str, Any]:
        try:
            domain_id = domains.register(svc.engine, ring, account.id, name, ed25519=ed)
        except IntegrityError:
            raise Problem(409, "domain-exists", "Domain already registered",
                          f"{name} is already a sending domain of this account", field="domain") from None
        return domains.view(_get(svc, account.id, domain_id), ring, policy(svc.settings))

    return await asyncio.to_thread(run)  # RSA key generation takes tens of milliseconds: off the loop


@router.get("/domains")
def list_domains(account: account_repo.Account = Depends(current_account),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    ring = keyring(svc.settings)
    with svc.engine.connect() as conn:
        items = repo.list_domains(conn, account.id)
    return {"items": [domains.view(d, ring, policy(svc.settings)) for d in items]}


@router.get("/domains/{domain_id}")
def get_domain(domain_id: int, account: account_repo.Account = Depends(current_account),
               svc: Services = Depends(services)) -> dict[str, Any]:
    return domains.view(_get(svc, account.id, domain_id), keyring(svc.settings), policy(svc.settings))


@router.post("/domains/{domain_id}/verify")
async def verify_domain(domain_id: int, account: account_repo.Account = Depends(current_account),
                        svc: Services = Depends(services)) -> dict[str, Any]:
    """Look the records up now; a pending (rotated) key found in DNS becomes the signing key."""
    s = svc.settings

    def run() -> dict[str, Any]:
        d = _get(svc, account.id, domain_id)
        ring = keyring(s)
        report = domains.verify(svc.engine, ring, sync_resolver(s.dns_nameservers, s.dns_timeout_s), d, policy(s))
        return {**domains.view(_get(svc, account.id, domain_id), ring, policy(s)), "report": report.as_dict()}

    return await asyncio.to_thread(run)


@router.post("/domains/{domain_id}/rotate")
async def rotate_domain(domain_id: int, account: account_repo.Account = Depends(current_account),
                        svc: Services = Depends(services)) -> dict[str, Any]:
    """A new key under a new selector, pending until its record is published and a verify finds it."""
    s = svc.settings

    def run() -> dict[str, Any]:
        _get(svc, account.id, domain_id)
        ring = keyring(s)
        domains.rotate(svc.engine, ring, account.id, domain_id, ed25519=s.dkim_ed25519)
        return domains.view(_get(svc, account.id, domain_id), ring, policy(s))

    return await asyncio.to_thread(run)


def require_verified_domain(svc: Services, account_id: int, from_email: str) -> None:
    """`ENVOI_REQUIRE_VERIFIED_DOMAIN`: a marketing campaign's From domain must be a verified sending domain of
    the account (Gmail/Yahoo 2024 bulk-sender rules, STANDARDS.md §4). Refused with the verification report.
    Runs in a worker thread (DNS lookups when the stored state says unverified)."""
    if not svc.settings.require_verified_domain:
        return
    s = svc.settings
    domain = from_email.rpartition("@")[2].lower()
    with svc.engine.connect() as conn:
        d = repo.signing_domain(conn, account_id, domain)
    if d is not None and d.verified_at is not None:
        return
    if d is None:
        raise Problem(422, "domain-unverified", "Sending domain not registered",
                      f"register {domain} with POST /v1/domains, publish the records it returns, then verify it",
                      field="from_email", report={"domain": domain, "verified": False, "checks": []})
    # Stored state says unverified: look again now (the customer may just have published the records). No write
    # here: the caller holds a transaction (SQLite allows one writer); POST /verify records the state.
    report, _ = domains.check(keyring(s), sync_resolver(s.dns_nameservers, s.dns_timeout_s), d, policy(s))
    if not report.verified:
        failing = ", ".join(c.name for c in report.failing())
        raise Problem(422, "domain-unverified", "Sending domain not verified",
                      f"{d.domain}: publish the records in `report` ({failing}) then send again", field="from_email",
                      report=report.as_dict())
