"""Helpers shared by the issue-5 integration tests (unsubscribe, rights)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import func, select

from crm.schema import suppressions, unsubscribe_actions, webhook_events
from sender.links import Links
from tests.integration.conftest import Env, ok, setup_campaign

SUBJECT = "Nouveautés"


def links(env: Env) -> Links:
    s = env.settings
    return Links(s.signing_keys, s.public_url, s.bounce_domain, s.unsubscribe_mailbox)


def contact_id(client: httpx.Client, email: str) -> int:
    return int(ok(client.get("/v1/contacts", params={"email": email}))["id"])


def campaign_with_tokens(env: Env, client: httpx.Client, account_id: int, emails: list[str]
                         ) -> tuple[int, dict[str, str]]:
    """A campaign (not sent) and an unsubscribe token per address, as the dispatcher would make them."""
    cid = setup_campaign(client, emails)
    lk = links(env)
    return cid, {e: lk.unsubscribe_token(account_id, contact_id(client, e), 0, cid) for e in emails}


def count(env: Env, table: Any, *where: Any) -> int:
    with env.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def suppressed(env: Env, account_id: int, address: str, channel: str = "email") -> list[dict[str, Any]]:
    with env.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(suppressions).where(
            suppressions.c.account_id == account_id, suppressions.c.address == address,
            suppressions.c.channel == channel))]


def webhooks(env: Env, account_id: int, event_type: str) -> list[dict[str, Any]]:
    with env.engine.connect() as conn:
        return [r.payload for r in conn.execute(select(webhook_events).where(
            webhook_events.c.account_id == account_id, webhook_events.c.event_type == event_type)
            .order_by(webhook_events.c.id))]


def actions(env: Env, account_id: int) -> int:
    return count(env, unsubscribe_actions, unsubscribe_actions.c.account_id == account_id)


def undo_action_id(html: str) -> int | None:
    m = re.search(r'name="action" value="(\d+)"', html)
    return int(m.group(1)) if m else None
