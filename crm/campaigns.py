"""Templates and campaigns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from crm.db import as_utc, utcnow
from crm.domain import CampaignStatus, Channel, MessageKind
from crm.schema import campaigns, templates


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    account_id: int
    name: str
    subject: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    account_id: int
    name: str
    channel: Channel
    kind: MessageKind
    list_id: int
    template_id: int
    from_email: str
    from_name: str
    reply_to: str
    status: CampaignStatus
    fanout_cursor: int
    fanout_done: bool
    audience: dict[str, Any]


def create_template(conn: Connection, account_id: int, name: str, subject: str, html: str, text: str) -> int:
    return int(conn.execute(
        insert(templates)
        .values(account_id=account_id, name=name, subject=subject, html=html, text=text, created_at=utcnow())
        .returning(templates.c.id)
    ).scalar_one())


def get_template(conn: Connection, account_id: int, template_id: int) -> Template | None:
    row = conn.execute(
        select(templates).where(templates.c.account_id == account_id, templates.c.id == template_id)
    ).first()
    if row is None:
        return None
    return Template(row.id, row.account_id, row.name, row.subject, row.html, row.text)


def create_campaign(conn: Connection, account_id: int, **values: Any) -> int:
    return int(conn.execute(
        insert(campaigns)
        .values(account_id=account_id, status=CampaignStatus.DRAFT, fanout_cursor=0, fanout_done=False,
                audience={}, created_at=utcnow(), **values)
        .returning(campaigns.c.id)
    ).scalar_one())


def get_campaign(conn: Connection, account_id: int | None, campaign_id: int) -> Campaign | None:
    q = select(campaigns).where(campaigns.c.id == campaign_id)
    if account_id is not None:
        q = q.where(campaigns.c.account_id == account_id)
    row = conn.execute(q).first()
    return _campaign(row) if row else None


def campaign_row(conn: Connection, account_id: int, campaign_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(campaigns).where(campaigns.c.account_id == account_id, campaigns.c.id == campaign_id)
    ).first()
    if row is None:
        return None
    d = dict(row._mapping)
    for k in ("created_at", "started_at", "completed_at", "cancelled_at"):
        d[k] = as_utc(d[k])
    return d


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row.id, account_id=row.account_id, name=row.name, channel=Channel(row.channel),
        kind=MessageKind(row.kind), list_id=row.list_id, template_id=row.template_id,
        from_email=row.from_email, from_name=row.from_name, reply_to=row.reply_to,
        status=CampaignStatus(row.status), fanout_cursor=row.fanout_cursor, fanout_done=row.fanout_done,
        audience=row.audience or {},
    )


def transition(conn: Connection, campaign_id: int, to: CampaignStatus, *, when: frozenset[CampaignStatus],
               **extra: Any) -> bool:
    """Compare-and-set on the status, so that two concurrent requests cannot both start a campaign."""
    return bool(
        conn.execute(
            update(campaigns)
            .where(campaigns.c.id == campaign_id, campaigns.c.status.in_([s.value for s in when]))
            .values(status=to, **extra)
        ).rowcount
    )


def campaigns_fanning_out(conn: Connection) -> list[int]:
    return list(
        conn.execute(
            select(campaigns.c.id).where(
                campaigns.c.status == CampaignStatus.SENDING, campaigns.c.fanout_done.is_(False)
            )
        ).scalars()
    )


def save_fanout_progress(conn: Connection, campaign_id: int, cursor: int, audience: dict[str, Any],
                         done: bool) -> None:
    conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(fanout_cursor=cursor, audience=audience, fanout_done=done)
    )
