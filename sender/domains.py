"""Sending domains as a service: register (generate and seal the keys), describe the records to publish,
verify against DNS (which also completes a pending key rotation), rotate by selector.

Rotation (RFC 6376 §3.1, M3AAWG "DKIM Key Rotation"): `rotate` adds a *pending* key under a new dated selector
and returns its record; signing continues with the active key. When a verification finds the pending key
published, it becomes active and the old key retires — its record must stay published `KEEP_OLD_DAYS` more
days, since mail signed with it may still be verified (queued, forwarded, re-checked by a receiver).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.resolver
from sqlalchemy.engine import Engine

from crm import sending_domains as repo
from sender.dkim_keys import KeyKind, PlatformKeyring, create_key, dns_record_name, dns_txt_value, open_private_key
from sender.domain_check import ExpectedDkim, Report, verify_domain

KEEP_OLD_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class DomainPolicy:
    spf_include: str
    bounce_domain: str
    ed25519: bool = False


def _new_keys(domain: str, keyring: PlatformKeyring, ed25519: bool, taken: frozenset[str]) -> list[repo.NewKey]:
    kinds = [KeyKind.RSA, *([KeyKind.ED25519] if ed25519 else [])]
    today = dt.datetime.now(dt.UTC).date()
    out = []
    for kind in kinds:
        k = create_key(domain, keyring, kind=kind, when=today, taken=taken)
        taken = taken | {k.selector}
        out.append(repo.NewKey(k.selector, kind.value, k.sealed))
    return out


def register(engine: Engine, keyring: PlatformKeyring, account_id: int, domain: str, *, ed25519: bool) -> int:
    """Generate the keys (RSA-2048, and Ed25519 if asked) and store them sealed; returns the domain id."""
    name = repo.normalise(domain)
    keys = _new_keys(name, keyring, ed25519, frozenset())
    with engine.begin() as conn:
        return repo.create_domain(conn, account_id, name, keys)


def rotate(engine: Engine, keyring: PlatformKeyring, account_id: int, domain_id: int, *, ed25519: bool) -> None:
    with engine.begin() as conn:
        d = repo.get_domain(conn, account_id, domain_id)
        if d is None:
            raise LookupError(domain_id)
        kinds_active = {k.kind for k in d.keys if k.state == repo.ACTIVE}
        for key in _new_keys(d.domain, keyring, ed25519 or "ed25519" in kinds_active,
                             repo.selectors_taken(conn, domain_id)):
            repo.add_pending(conn, account_id, domain_id, key)


def record_value(key: repo.KeyRow, domain: str, keyring: PlatformKeyring) -> str:
    return dns_txt_value(open_private_key(key.sealed, keyring, domain=domain, selector=key.selector))


def expected_dkim(d: repo.Domain, keyring: PlatformKeyring, states: Sequence[str] = (repo.ACTIVE, repo.PENDING)
                  ) -> list[tuple[repo.KeyRow, ExpectedDkim]]:
    return [(k, ExpectedDkim(k.selector, record_value(k, d.domain, keyring))) for k in d.keys if k.state in states]


def check(keyring: PlatformKeyring, resolver: dns.resolver.Resolver, d: repo.Domain, policy: DomainPolicy
          ) -> tuple[Report, list[repo.KeyRow]]:
    """The DNS report (no write) and the pending keys found published."""
    expected = expected_dkim(d, keyring)
    report = verify_domain(resolver, d.domain, [e for _, e in expected], spf_include=policy.spf_include,
                           bounce_domain=policy.bounce_domain)
    by_name = {c.name: c for c in report.checks}
    published_pending = [k for k, e in expected if k.state == repo.PENDING and by_name[f"dkim:{e.selector}"].ok]
    # A pending key not yet in DNS does not make the domain unverified: the active key still signs.
    pending_names = {f"dkim:{k.selector}" for k, _ in expected if k.state == repo.PENDING}
    verified = all(c.ok for c in report.checks if c.name not in pending_names)
    return Report(report.domain, verified, report.checks), published_pending


def verify(engine: Engine, keyring: PlatformKeyring, resolver: dns.resolver.Resolver, d: repo.Domain,
           policy: DomainPolicy) -> Report:
    """Check DNS, activate pending keys found published, record the verification state."""
    report, published_pending = check(keyring, resolver, d, policy)
    with engine.begin() as conn:
        for k in published_pending:
            repo.activate(conn, d.id, k.id, KEEP_OLD_DAYS)
        repo.set_verified(conn, d.id, report.verified)
    return report


def view(d: repo.Domain, keyring: PlatformKeyring, policy: DomainPolicy) -> dict[str, Any]:
    """The domain as the API shows it: keys by selector and every record the customer must publish."""
    keys = []
    records = [{"purpose": "spf", "type": "TXT", "name": d.domain, "value": f"v=spf1 include:{policy.spf_include} ~all",
                "note": "or add include:" + policy.spf_include + " to your existing SPF record (one SPF record only)"}]
    for k in d.keys:
        value = record_value(k, d.domain, keyring)
        keys.append({"selector": k.selector, "kind": k.kind, "state": k.state,
                     "created_at": k.created_at, "activated_at": k.activated_at, "retired_at": k.retired_at,
                     "keep_published_until": k.retire_after})
        if k.state != repo.RETIRED or (k.retire_after and k.retire_after > dt.datetime.now(dt.UTC)):
            records.append({"purpose": f"dkim ({k.state})", "type": "TXT",
                            "name": dns_record_name(k.selector, d.domain), "value": value})
    records.append({"purpose": "dmarc", "type": "TXT", "name": f"_dmarc.{d.domain}",
                    "value": f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{d.domain}; adkim=r; aspf=r"})
    return {"id": d.id, "domain": d.domain, "verified": d.verified_at is not None, "verified_at": d.verified_at,
            "created_at": d.created_at, "keys": keys, "records": records}
