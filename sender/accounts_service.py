"""Account suspension, reinstatement and termination: the effects of `guardrails.account_state`.

Suspension (issue 3, "Effects"): the Redis flag `crm.keys.account_status` is set first — every worker's
`AccountStatusGuard` reads it right before each hand-off, so no further message of the account reaches a
transport once the in-flight batches are done — then, in one SQL transaction: the account row (status,
reason, evidence), the audit log, the account's sending campaigns paused, and the `account.suspended` webhook
(outbox). Queued messages are not touched: the dispatcher marks them `held` as it meets them.

Reinstatement (ops, with a note): status active, waivers for the thresholds that were crossed (the same
evidence must not suspend again), flag cleared, held messages put back to `queued` and re-enqueued, paused
campaigns resumed. Cancellation: held messages cancelled. Used by the admin API and the CLI alike."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from crm import accounts as account_repo
from crm import keys, webhooks
from crm.db import as_utc, utcnow
from crm.domain import AccountStatus, BillingState, CampaignStatus, MessageKind, MessageStatus
from crm.schema import accounts, audit_log, campaigns, messages
from guardrails import account_state as sm
from guardrails.policy import GuardrailPolicy
from sender.hooks import Action, Verdict
from sender.queue import DispatchQueue, QueueItem

log = logging.getLogger(__name__)

STRAY_HELD_GRACE_S = 10.0  # a held message of an active account older than this is released by the chore


class AccountNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Outcome:
    account_id: int
    status: AccountStatus
    changed: bool
    released: int = 0  # held messages re-enqueued (reinstate)
    cancelled: int = 0  # held messages cancelled (cancel / terminate)
    campaigns: list[int] = field(default_factory=list)  # campaigns paused / resumed / cancelled
    flagged_at: float = 0.0  # epoch seconds when the Redis flag was set (suspend)


def _state(row: Any) -> sm.AccountState:
    reason = sm.SuspensionReason(row.suspension_reason) if row.suspension_reason in \
        sm.SuspensionReason.__members__.values() else None
    return sm.AccountState(AccountStatus(row.status), reason, dict(row.suspension_evidence or {}))


def _row(conn: Connection, account_id: int, lock: bool = True) -> Any:
    q = select(accounts).where(accounts.c.id == account_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()  # two workers seeing the same crossing: one transition, one audit row
    row = conn.execute(q).first()
    if row is None:
        raise AccountNotFound(f"account {account_id} not found")
    return row


def _write(conn: Connection, account_id: int, t: sm.Transition) -> None:
    assert t.audit is not None
    evidence = dict(t.state.evidence) or None
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(
        status=t.state.status.value, suspension_reason=t.state.reason.value if t.state.reason else None,
        suspension_evidence=evidence,
        **({"terminated_at": t.audit.at} if t.state.status is AccountStatus.TERMINATED else {})))
    account_repo.audit(conn, account_id, t.audit.actor, t.audit.action.value, t.audit.data)


def _set_campaigns(conn: Connection, account_id: int, frm: CampaignStatus, to: CampaignStatus,
                   **extra: Any) -> list[int]:
    ids = list(conn.execute(select(campaigns.c.id).where(
        campaigns.c.account_id == account_id, campaigns.c.status == frm.value)).scalars())
    if ids:
        conn.execute(update(campaigns).where(campaigns.c.id.in_(ids), campaigns.c.status == frm.value)
                     .values(status=to.value, **extra))
    return ids


# -- suspension ------------------------------------------------------------------------------------------------

def suspend_sql(conn: Connection, account_id: int, reason: sm.SuspensionReason, evidence: Mapping[str, object],
                actor: str = sm.SYSTEM_ACTOR, note: str = "") -> Outcome:
    row = _row(conn, account_id)
    t = sm.suspend(_state(row), reason, evidence, at=utcnow(), actor=actor, note=note)
    if not t.changed:
        return Outcome(account_id, t.state.status, False)
    _write(conn, account_id, t)
    paused = _set_campaigns(conn, account_id, CampaignStatus.SENDING, CampaignStatus.PAUSED)
    webhooks.enqueue(conn, account_id, "account.suspended", {
        "status": "suspended", "reason": reason.value, "evidence": dict(evidence), "note": note,
        "paused_campaigns": paused, "at": t.audit.at.isoformat() if t.audit else None})
    return Outcome(account_id, t.state.status, True, campaigns=paused)


async def suspend(engine: Engine, redis: Redis, account_id: int, reason: sm.SuspensionReason,
                  evidence: Mapping[str, object], actor: str = sm.SYSTEM_ACTOR, note: str = "") -> Outcome:
    """Flag first (the guard's fast path, within the 1 s bound), then the SQL truth."""
    await redis.set(keys.account_status(account_id), AccountStatus.SUSPENDED.value)
    flagged_at = time.time()

    def run() -> Outcome:
        with engine.begin() as conn:
            return replace(suspend_sql(conn, account_id, reason, evidence, actor, note), flagged_at=flagged_at)

    try:
        out = await asyncio.to_thread(run)
    except sm.InvalidTransition:
        await redis.set(keys.account_status(account_id), AccountStatus.TERMINATED.value)
        raise
    if out.changed:
        log.warning("account %s suspended (%s)", account_id, reason.value)
    return out


# -- reinstatement ---------------------------------------------------------------------------------------------

def _crossed(evidence: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(mailing, threshold) pairs named by a threshold suspension's evidence."""
    mailing = evidence.get("mailing")
    crossed = evidence.get("crossed") or []
    if not isinstance(mailing, str) or not isinstance(crossed, list):
        return []
    return [(mailing, str(c.get("threshold"))) for c in crossed if isinstance(c, Mapping)]


def _held(conn: Connection, account_id: int) -> list[tuple[int, int | None, str]]:
    return [(r.id, r.campaign_id, r.kind) for r in conn.execute(
        select(messages.c.id, messages.c.campaign_id, messages.c.kind).where(
            messages.c.account_id == account_id, messages.c.status == MessageStatus.HELD.value)
        .order_by(messages.c.id))]


def _requeue_sql(conn: Connection, ids: Sequence[int]) -> list[int]:
    """held → queued for these ids (only those still held); returns the ids moved."""
    moved: list[int] = []
    now = utcnow()
    for i in range(0, len(ids), 900):
        chunk = list(ids[i:i + 900])
        still = list(conn.execute(select(messages.c.id).where(
            messages.c.id.in_(chunk), messages.c.status == MessageStatus.HELD.value)).scalars())
        if still:
            conn.execute(update(messages).where(messages.c.id.in_(still),
                                                messages.c.status == MessageStatus.HELD.value)
                         .values(status=MessageStatus.QUEUED.value, updated_at=now, last_error=None))
            moved += still
    return moved


async def enqueue_released(redis: Redis, queue: DispatchQueue, account_id: int,
                           rows: Sequence[tuple[int, int | None, str]]) -> None:
    """Put released messages back on the dispatch queue (their `claimed` bit is cleared by `release`)."""
    await queue.release([QueueItem(mid, account_id, cid or 0, kind == MessageKind.TRANSACTIONAL.value)
                         for mid, cid, kind in rows])


async def reinstate(engine: Engine, redis: Redis, queue: DispatchQueue, account_id: int, *, actor: str,
                    note: str) -> Outcome:
    """Ops decision with a note: active again, held messages resume, paused campaigns resume."""
    with engine.connect() as conn:
        row = _row(conn, account_id, lock=False)
    # Validate first (raises InvalidTransition / ValueError) so that nothing changes on a refused request.
    sm.reinstate(_state(row), actor=actor, note=note, at=utcnow())
    waivers = _crossed(dict(row.suspension_evidence or {}))
    if waivers:
        # Before the status changes: the same crossing must not suspend the account again at the next batch.
        pipe = redis.pipeline(transaction=False)
        for mailing, threshold in waivers:
            pipe.hset(waiver_key(mailing), f"waived:{threshold}", f"{actor}: {note}"[:200])
        await pipe.execute()

    def run() -> tuple[Outcome, list[tuple[int, int | None, str]]]:
        with engine.begin() as conn:
            r = _row(conn, account_id)
            t = sm.reinstate(_state(r), actor=actor, note=note, at=utcnow())
            _write(conn, account_id, t)
            resumed = _set_campaigns(conn, account_id, CampaignStatus.PAUSED, CampaignStatus.SENDING)
            held = _held(conn, account_id)
            moved = set(_requeue_sql(conn, [h[0] for h in held]))
            rows = [h for h in held if h[0] in moved]
            webhooks.enqueue(conn, account_id, "account.reinstated", {
                "status": "active", "note": note, "actor": actor, "released_messages": len(rows),
                "resumed_campaigns": resumed, "waived": [f"{m}:{th}" for m, th in waivers]})
            return Outcome(account_id, AccountStatus.ACTIVE, True, len(rows), 0, resumed), rows

    out, rows = await asyncio.to_thread(run)
    await redis.delete(keys.account_status(account_id))
    await enqueue_released(redis, queue, account_id, rows)
    log.warning("account %s reinstated by %s: %d held messages re-enqueued", account_id, actor, len(rows))
    return out


def waiver_key(mailing: str) -> str:
    """Waivers live in the mailing's guardrail counters hash (campaign) or the account's window (transactional)."""
    kind, _, ident = mailing.partition(":")
    return keys.guardrail_window(int(ident)) if kind == "tx" else keys.guardrail_counters(int(ident))


# -- termination, cancellation, billing ------------------------------------------------------------------------

def _cancel_held_sql(conn: Connection, account_id: int) -> int:
    return int(conn.execute(update(messages).where(
        messages.c.account_id == account_id, messages.c.status == MessageStatus.HELD.value)
        .values(status=MessageStatus.CANCELLED.value, updated_at=utcnow())).rowcount or 0)


def cancel_held(engine: Engine, account_id: int, actor: str, note: str = "") -> Outcome:
    """Cancel the held messages of a suspended account (and its paused campaigns): they will never be sent."""
    with engine.begin() as conn:
        row = _row(conn, account_id)
        n = _cancel_held_sql(conn, account_id)
        cancelled = _set_campaigns(conn, account_id, CampaignStatus.PAUSED, CampaignStatus.CANCELLED,
                                   cancelled_at=utcnow())
        account_repo.audit(conn, account_id, actor, "account.held_cancelled",
                           {"cancelled_messages": n, "cancelled_campaigns": cancelled, "note": note})
    return Outcome(account_id, AccountStatus(row.status), n > 0, cancelled=n, campaigns=cancelled)


async def terminate(engine: Engine, redis: Redis, account_id: int, *, actor: str, note: str) -> Outcome:
    await redis.set(keys.account_status(account_id), AccountStatus.TERMINATED.value)

    def run() -> Outcome:
        with engine.begin() as conn:
            t = sm.terminate(_state(_row(conn, account_id)), actor=actor, note=note, at=utcnow())
            _write(conn, account_id, t)
            now = utcnow()
            n = int(conn.execute(update(messages).where(
                messages.c.account_id == account_id,
                messages.c.status.in_([MessageStatus.HELD.value, MessageStatus.QUEUED.value,
                                       MessageStatus.DEFERRED.value]))
                .values(status=MessageStatus.CANCELLED.value, updated_at=now)).rowcount or 0)
            ids = []
            for frm in (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.DRAFT):
                ids += _set_campaigns(conn, account_id, frm, CampaignStatus.CANCELLED, cancelled_at=now)
            webhooks.enqueue(conn, account_id, "account.terminated", {"status": "terminated", "note": note})
            return Outcome(account_id, AccountStatus.TERMINATED, True, cancelled=n, campaigns=ids)

    return await asyncio.to_thread(run)


def set_billing(engine: Engine, account_id: int, state: BillingState, overdue_since: date | None,
                actor: str) -> None:
    """Set by the CRM through the admin API; the overdue chore suspends after the grace period."""
    since = None
    if state is BillingState.OVERDUE:
        since = datetime.combine(overdue_since or utcnow().date(), datetime.min.time()).replace(
            tzinfo=utcnow().tzinfo)
    with engine.begin() as conn:
        _row(conn, account_id)
        conn.execute(update(accounts).where(accounts.c.id == account_id)
                     .values(billing_state=state.value, overdue_since=since))
        account_repo.audit(conn, account_id, actor, "account.billing",
                           {"billing_state": state.value, "overdue_since": since.date().isoformat() if since else None})


async def suspend_overdue(engine: Engine, redis: Redis, now: datetime,
                          policy_of: Any = None) -> list[int]:
    """Chore: suspend every active account overdue for more than the grace days (CGV: 15 calendar days)."""
    def candidates() -> list[tuple[int, date]]:
        with engine.connect() as conn:
            return [(r.id, as_utc(r.overdue_since).date()) for r in conn.execute(  # type: ignore[union-attr]
                select(accounts.c.id, accounts.c.overdue_since).where(
                    accounts.c.status == AccountStatus.ACTIVE.value,
                    accounts.c.billing_state == BillingState.OVERDUE.value, accounts.c.overdue_since.is_not(None)))]

    done = []
    for account_id, since in await asyncio.to_thread(candidates):
        policy: GuardrailPolicy | None = await asyncio.to_thread(policy_of, account_id) if policy_of else None
        grace = policy.overdue_grace_days if policy else sm.CONTRACT_OVERDUE_GRACE_DAYS
        t = sm.check_billing(sm.AccountState(), BillingState.OVERDUE, since, today=now.date(), at=now,
                             grace_days=grace)
        if t.changed and t.state.reason is not None:
            await suspend(engine, redis, account_id, t.state.reason, dict(t.state.evidence))
            done.append(account_id)
    return done


# -- reading ---------------------------------------------------------------------------------------------------

def show(engine: Engine, account_id: int, audit_limit: int = 50) -> dict[str, Any]:
    with engine.connect() as conn:
        row = _row(conn, account_id, lock=False)
        trail = conn.execute(select(audit_log).where(audit_log.c.account_id == account_id)
                             .order_by(audit_log.c.id.desc()).limit(audit_limit))
        audit = [{"id": a.id, "actor": a.actor, "action": a.action, "data": a.data,
                  "at": as_utc(a.created_at).isoformat()} for a in trail]  # type: ignore[union-attr]
        held = conn.execute(select(messages.c.id).where(
            messages.c.account_id == account_id, messages.c.status == MessageStatus.HELD.value)).all()
    overdue = as_utc(row.overdue_since)
    return {"id": row.id, "name": row.name, "status": row.status, "suspension_reason": row.suspension_reason,
            "suspension_evidence": row.suspension_evidence, "billing_state": row.billing_state,
            "overdue_since": overdue.date().isoformat() if overdue else None, "webhook_url": row.webhook_url,
            "held_messages": len(held), "audit": list(reversed(audit))}


# -- the hand-off guard and its supporting chores ---------------------------------------------------------------

class AccountStatusGuard:
    """HandoffGuard: HOLD every message of an account whose Redis status flag is set (one pipelined round
    trip per batch). The dispatcher also checks the SQL status when it loads the batch; the flag closes the
    window between that load and the hand-off (bound: one in-flight batch per worker)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def check(self, batch: Sequence[Mapping[str, Any]]) -> Mapping[int, Verdict]:
        account_ids = sorted({int(m["account_id"]) for m in batch})
        pipe = self.redis.pipeline(transaction=False)
        for aid in account_ids:
            pipe.get(keys.account_status(aid))
        flags = dict(zip(account_ids, await pipe.execute(), strict=True))
        stopped = {aid: (v.decode() if isinstance(v, bytes) else v) for aid, v in flags.items()
                   if v is not None and (v.decode() if isinstance(v, bytes) else v) != AccountStatus.ACTIVE.value}
        if not stopped:
            return {}
        return {int(m["id"]): Verdict(Action.HOLD, f"account {stopped[int(m['account_id'])]}")
                for m in batch if int(m["account_id"]) in stopped}


async def sync_flags(engine: Engine, redis: Redis) -> int:
    """Chore: every account that is not active in SQL has its flag (Redis may have lost it)."""
    def stopped() -> list[tuple[int, str]]:
        with engine.connect() as conn:
            return [(r.id, r.status) for r in conn.execute(select(accounts.c.id, accounts.c.status).where(
                accounts.c.status != AccountStatus.ACTIVE.value))]

    rows = await asyncio.to_thread(stopped)
    if rows:
        pipe = redis.pipeline(transaction=False)
        for aid, status in rows:
            pipe.set(keys.account_status(aid), status)
        await pipe.execute()
    return len(rows)


async def release_stray_held(engine: Engine, redis: Redis, queue: DispatchQueue, limit: int = 1000) -> int:
    """Chore: a batch that loaded the account as suspended just before a reinstatement records its messages
    `held` after the reinstatement released the others; put such strays back on the queue."""
    def run() -> dict[int, list[tuple[int, int | None, str]]]:
        cutoff = utcnow().timestamp() - STRAY_HELD_GRACE_S
        with engine.begin() as conn:
            rows = [r for r in conn.execute(
                select(messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.kind,
                       messages.c.updated_at)
                .select_from(messages.join(accounts, accounts.c.id == messages.c.account_id))
                .where(messages.c.status == MessageStatus.HELD.value,
                       accounts.c.status == AccountStatus.ACTIVE.value).limit(limit))
                if as_utc(r.updated_at).timestamp() < cutoff]  # type: ignore[union-attr]
            moved = set(_requeue_sql(conn, [r.id for r in rows]))
        out: dict[int, list[tuple[int, int | None, str]]] = {}
        for r in rows:
            if r.id in moved:
                out.setdefault(r.account_id, []).append((r.id, r.campaign_id, r.kind))
        return out

    by_account = await asyncio.to_thread(run)
    for aid, rows in by_account.items():
        await enqueue_released(redis, queue, aid, rows)
    return sum(len(v) for v in by_account.values())
