"""Idempotency keys for send requests: a CRM retry with the same key gets the first answer, never a 2nd send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm.db import utcnow
from crm.schema import idempotency_keys


@dataclass(frozen=True, slots=True)
class Stored:
    request_hash: str
    status_code: int | None
    response: Any


def claim(conn: Connection, account_id: int, key: str, request_hash: str) -> Stored | None:
    """Reserve the key inside the caller's transaction. None: first use (go on). Otherwise the stored entry."""
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(idempotency_keys)
    # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    inserted = conn.execute(
        ins.values(account_id=account_id, key=key, request_hash=request_hash, created_at=utcnow())
        .on_conflict_do_nothing().returning(idempotency_keys.c.key)
    ).first()
    if inserted is not None:
        return None
    row = conn.execute(
        select(idempotency_keys).where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
    ).one()
    return Stored(row.request_hash, row.status_code, row.response)


def store(conn: Connection, account_id: int, key: str, status_code: int, response: Any) -> None:
    conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)
        .values(status_code=status_code, response=response)
    )
