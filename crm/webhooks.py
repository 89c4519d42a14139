"""The webhook outbox: events for the CRM are written in the transaction that causes them (never lost, never
announced for something that rolled back); a worker chore delivers them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from crm.db import utcnow
from crm.schema import webhook_events


def enqueue(conn: Connection, account_id: int, event_type: str, payload: dict[str, Any]) -> int:
    now = utcnow()
    return int(conn.execute(
        insert(webhook_events).values(account_id=account_id, event_type=event_type, payload=payload,
                                      created_at=now, attempts=0, next_attempt_at=now)
        .returning(webhook_events.c.id)
    ).scalar_one())
