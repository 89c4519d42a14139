"""Sending domains of an account and their DKIM keys by selector (issue 7).

`sending_domains` holds the domain, its verification time and a mirror of the active RSA key (selector and
sealed key); `dkim_keys` holds every key with its state, so that a rotation keeps the old selector published
(state `retired`, `retire_after`) while the new one signs. Keys arrive here already sealed: this module never
sees a private key in clear.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Connection

from crm.db import as_utc, utcnow
from crm.schema import dkim_keys, sending_domains

PENDING, ACTIVE, RETIRED = "pending", "active", "retired"


@dataclass(frozen=True, slots=True)
class NewKey:
    selector: str
    kind: str  # rsa | ed25519
    sealed: str


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    selector: str
    kind: str
    sealed: str
    state: str
    created_at: datetime | None
    activated_at: datetime | None
    retired_at: datetime | None
    retire_after: datetime | None


@dataclass(frozen=True, slots=True)
class Domain:
    id: int
    account_id: int
    domain: str
    verified_at: datetime | None
    created_at: datetime | None
    keys: tuple[KeyRow, ...]

    def active(self, kind: str) -> KeyRow | None:
        return next((k for k in self.keys if k.state == ACTIVE and k.kind == kind), None)

    def pending(self, kind: str) -> KeyRow | None:
        return next((k for k in self.keys if k.state == PENDING and k.kind == kind), None)


def normalise(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def create_domain(conn: Connection, account_id: int, domain: str, keys: Sequence[NewKey]) -> int:
    """A new sending domain whose keys are all active at once (nothing was signed before them)."""
    now = utcnow()
    rsa = next(k for k in keys if k.kind == "rsa")
    domain_id = int(conn.execute(
        insert(sending_domains).values(account_id=account_id, domain=normalise(domain), created_at=now,
                                       dkim_selector=rsa.selector, dkim_private_key=rsa.sealed)
        .returning(sending_domains.c.id)
    ).scalar_one())
    for k in keys:
        conn.execute(insert(dkim_keys).values(account_id=account_id, domain_id=domain_id, selector=k.selector,
                                              kind=k.kind, private_key=k.sealed, state=ACTIVE, created_at=now,
                                              activated_at=now))
    return domain_id


def _keys(conn: Connection, domain_ids: Sequence[int]) -> dict[int, list[KeyRow]]:
    out: dict[int, list[KeyRow]] = {i: [] for i in domain_ids}
    if not domain_ids:
        return out
    rows = conn.execute(select(dkim_keys).where(dkim_keys.c.domain_id.in_(domain_ids)).order_by(dkim_keys.c.id))
    for r in rows.mappings():
        out[r["domain_id"]].append(KeyRow(
            r["id"], r["selector"], r["kind"], r["private_key"], r["state"], as_utc(r["created_at"]),
            as_utc(r["activated_at"]), as_utc(r["retired_at"]), as_utc(r["retire_after"])))
    return out


def _domain(conn: Connection, row: Any) -> Domain:
    keys = _keys(conn, [row["id"]])[row["id"]]
    return Domain(row["id"], row["account_id"], row["domain"], as_utc(row["verified_at"]),
                  as_utc(row["created_at"]), tuple(keys))


def get_domain(conn: Connection, account_id: int, domain_id: int) -> Domain | None:
    row = conn.execute(select(sending_domains).where(
        sending_domains.c.account_id == account_id, sending_domains.c.id == domain_id)).mappings().first()
    return _domain(conn, row) if row else None


def find_domain(conn: Connection, account_id: int | None, domain: str) -> Domain | None:
    """By name; `account_id=None` (platform CLI) takes the first account that registered it."""
    q = select(sending_domains).where(sending_domains.c.domain == normalise(domain))
    if account_id is not None:
        q = q.where(sending_domains.c.account_id == account_id)
    row = conn.execute(q.order_by(sending_domains.c.id)).mappings().first()
    return _domain(conn, row) if row else None


def list_domains(conn: Connection, account_id: int) -> list[Domain]:
    rows = list(conn.execute(select(sending_domains).where(sending_domains.c.account_id == account_id)
                             .order_by(sending_domains.c.id)).mappings())
    keys = _keys(conn, [r["id"] for r in rows])
    return [Domain(r["id"], r["account_id"], r["domain"], as_utc(r["verified_at"]), as_utc(r["created_at"]),
                   tuple(keys[r["id"]])) for r in rows]


def signing_domain(conn: Connection, account_id: int, from_domain: str) -> Domain | None:
    """The account's domain that signs for `from_domain`: itself, else its closest registered parent
    (DMARC relaxed alignment, RFC 7489 §3.1.1, accepts d= of the organizational domain)."""
    labels = normalise(from_domain).split(".")
    candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    if not candidates:
        return None
    rows = list(conn.execute(select(sending_domains).where(
        sending_domains.c.account_id == account_id, sending_domains.c.domain.in_(candidates))).mappings())
    if not rows:
        return None
    best = max(rows, key=lambda r: len(r["domain"]))
    return _domain(conn, best)


def set_verified(conn: Connection, domain_id: int, verified: bool) -> None:
    conn.execute(update(sending_domains).where(sending_domains.c.id == domain_id)
                 .values(verified_at=utcnow() if verified else None))


def add_pending(conn: Connection, account_id: int, domain_id: int, key: NewKey) -> None:
    """A rotation's new key: published by the customer first, activated once DNS serves it."""
    conn.execute(update(dkim_keys).where(dkim_keys.c.domain_id == domain_id, dkim_keys.c.kind == key.kind,
                                         dkim_keys.c.state == PENDING).values(state=RETIRED, retired_at=utcnow()))
    conn.execute(insert(dkim_keys).values(account_id=account_id, domain_id=domain_id, selector=key.selector,
                                          kind=key.kind, private_key=key.sealed, state=PENDING,
                                          created_at=utcnow()))


def activate(conn: Connection, domain_id: int, key_id: int, keep_old_days: float) -> None:
    """The pending key signs from now on; the previous active key of its kind retires, its record to be
    kept in DNS for `keep_old_days` (messages in transit or re-verified later still find it)."""
    now = utcnow()
    key = conn.execute(select(dkim_keys).where(dkim_keys.c.id == key_id)).mappings().one()
    conn.execute(update(dkim_keys).where(and_(
        dkim_keys.c.domain_id == domain_id, dkim_keys.c.kind == key["kind"], dkim_keys.c.state == ACTIVE,
    )).values(state=RETIRED, retired_at=now, retire_after=now + timedelta(days=keep_old_days)))
    conn.execute(update(dkim_keys).where(dkim_keys.c.id == key_id).values(state=ACTIVE, activated_at=now))
    if key["kind"] == "rsa":
        conn.execute(update(sending_domains).where(sending_domains.c.id == domain_id)
                     .values(dkim_selector=key["selector"], dkim_private_key=key["private_key"]))


def selectors_taken(conn: Connection, domain_id: int) -> frozenset[str]:
    return frozenset(conn.execute(select(dkim_keys.c.selector).where(dkim_keys.c.domain_id == domain_id)).scalars())


def count_domains(conn: Connection, account_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(sending_domains)
                            .where(sending_domains.c.account_id == account_id)).scalar_one())
