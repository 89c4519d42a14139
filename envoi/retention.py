"""The retention chore (issue 5): purge the personal data of accounts terminated three months ago or more.

The clock is injected so tests (and `envoi retention purge --now ISO`) can move time; the rule itself is pure
(`guardrails.retention`), the SQL is `crm.retention`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from crm import retention
from crm.db import utcnow
from guardrails.retention import purge_due

log = logging.getLogger(__name__)


def purge_due_accounts(engine: Engine, now: datetime) -> dict[int, dict[str, int]]:
    """Purge every account terminated three calendar months or more before `now` (`guardrails.retention`)."""
    # SQL narrows to accounts terminated at least 89 days ago (three months are never shorter); the pure rule
    # decides, so that 30 November is due on 28 February, not earlier and not later.
    with engine.connect() as conn:
        candidates = retention.terminated_accounts(conn, now - timedelta(days=89))
    due = [aid for aid, terminated_at in candidates if purge_due(terminated_at, now)]
    done: dict[int, dict[str, int]] = {}
    for account_id in due:
        with engine.begin() as conn:  # one transaction per account: a failure does not undo the others
            counts = retention.purge_account(conn, account_id)
        if any(counts.values()):
            log.info("purged the personal data of terminated account %s: %s", account_id, counts)
            done[account_id] = counts
    return done


def retention_chore(engine: Engine, clock: Callable[[], datetime] = utcnow) -> Callable[[], Awaitable[None]]:
    async def purge_terminated_accounts() -> None:
        await asyncio.to_thread(purge_due_accounts, engine, clock())

    return purge_terminated_accounts
