"""Campaign fan-out: stream the audience in batches, keep consented, unsuppressed contacts, create one ledger
row each, enqueue them, checkpoint the cursor.

Resumable: a batch is (1) inserted into the ledger (rows that exist are kept), (2) enqueued, (3) checkpointed.
A crash anywhere replays the batch from the last checkpoint: no recipient is lost, and the queue's `claimed`
guard drops the second copies, so none is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm import campaigns as campaign_repo
from crm import ledger
from crm.address_hash import AddressHasher
from crm.domain import CampaignStatus, Channel, ConsentStatus, MessageKind
from crm.schema import contacts, list_members
from guardrails.consent import gate
from guardrails.suppression_reasons import audience_skip_reason
from sender.queue import DispatchQueue, QueueItem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    queued: int
    skipped: Counter[str]
    cursor: int
    done: bool


def _audience_batch(engine: Engine, campaign: campaign_repo.Campaign, cursor: int, size: int
                    ) -> list[Any]:
    address = contacts.c.email if campaign.channel == Channel.EMAIL else contacts.c.mobile
    consent = contacts.c.email_consent if campaign.channel == Channel.EMAIL else contacts.c.sms_consent
    with engine.connect() as conn:
        return list(conn.execute(
            select(contacts.c.id, address.label("address"), consent.label("consent"))
            .select_from(list_members.join(contacts, contacts.c.id == list_members.c.contact_id))
            .where(list_members.c.list_id == campaign.list_id, contacts.c.account_id == campaign.account_id,
                   list_members.c.contact_id > cursor)
            .order_by(list_members.c.contact_id)
            .limit(size)
        ))


def _insert_batch(engine: Engine, campaign: campaign_repo.Campaign, rows: list[Any],
                  hasher: AddressHasher | None) -> tuple[list[int], Counter[str]]:
    skipped: Counter[str] = Counter()
    with engine.begin() as conn:
        addresses = [r.address for r in rows if r.address]
        # With the hasher, erased contacts (kept only as a keyed hash) that were imported again match too.
        suppressed = ledger.suppressed_addresses(conn, campaign.account_id, campaign.channel, addresses, hasher)
        keep: list[tuple[int, str]] = []
        for r in rows:
            decision = gate(campaign.kind, bool(r.address), ConsentStatus(r.consent), r.address in suppressed)
            if decision.allowed:
                keep.append((r.id, r.address))
            else:
                assert decision.reason is not None
                # The audience report tells unsubscribed / bounced / complained / erased apart (issue 5).
                skipped[audience_skip_reason(decision.reason, suppressed.get(r.address)).value] += 1
        ids = ledger.insert_campaign_messages(
            conn, campaign.account_id, campaign.id, campaign.channel, campaign.kind, keep
        )
    return ids, skipped


async def fanout_batch(engine: Engine, queue: DispatchQueue, campaign: campaign_repo.Campaign, size: int,
                       hasher: AddressHasher | None = None) -> BatchResult:
    rows = await asyncio.to_thread(_audience_batch, engine, campaign, campaign.fanout_cursor, size)
    if not rows:
        await asyncio.to_thread(_checkpoint, engine, campaign, campaign.fanout_cursor, Counter(), 0, True)
        return BatchResult(0, Counter(), campaign.fanout_cursor, True)
    ids, skipped = await asyncio.to_thread(_insert_batch, engine, campaign, rows, hasher)
    await queue.enqueue([
        QueueItem(mid, campaign.account_id, campaign.id, campaign.kind is MessageKind.TRANSACTIONAL)
        for mid in ids
    ])
    cursor = rows[-1].id
    done = len(rows) < size
    await asyncio.to_thread(_checkpoint, engine, campaign, cursor, skipped, len(ids), done)
    return BatchResult(len(ids), skipped, cursor, done)


def _checkpoint(engine: Engine, campaign: campaign_repo.Campaign, cursor: int, skipped: Counter[str],
                queued: int, done: bool) -> None:
    with engine.begin() as conn:
        current = campaign_repo.get_campaign(conn, None, campaign.id)
        if current is None:
            return
        audience = dict(current.audience)
        audience["queued"] = int(audience.get("queued", 0)) + queued
        skips = Counter(audience.get("skipped", {}))
        skips.update(skipped)
        audience["skipped"] = dict(skips)
        campaign_repo.save_fanout_progress(conn, campaign.id, cursor, audience, done)


async def run_fanout(engine: Engine, queue: DispatchQueue, campaign_id: int, size: int,
                     lock_refresh: Any = None, hasher: AddressHasher | None = None) -> None:
    """Fan a campaign out to the end (or until it is no longer sending)."""
    while True:
        campaign = await asyncio.to_thread(_load, engine, campaign_id)
        if campaign is None or campaign.status != CampaignStatus.SENDING or campaign.fanout_done:
            return
        result = await fanout_batch(engine, queue, campaign, size, hasher)
        if lock_refresh is not None:
            await lock_refresh()
        if result.done:
            log.info("campaign %s fanned out", campaign_id)
            return


def _load(engine: Engine, campaign_id: int) -> campaign_repo.Campaign | None:
    with engine.connect() as conn:
        return campaign_repo.get_campaign(conn, None, campaign_id)
