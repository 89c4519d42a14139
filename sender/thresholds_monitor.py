"""The mailing thresholds wired to the dispatch road: counters in Redis, continuous evaluation, suspension.

Contract, Annex 1, "Suspension" (ii) — the rules are `guardrails.thresholds`; this module feeds them:
- per campaign (a "mailing event"), counters in `crm.keys.guardrail_counters`: `attempted` (first hand-off of
  a message), `failed` (final failures after a hand-off: hard, soft with retries exhausted, and policy blocks,
  which count toward the account's failure rate but never against the recipient), `delivered`, and the last
  SMTP reply citing a blocklist;
- transactional sends: a rolling 24 h window per account (`crm.keys.guardrail_window`, hourly buckets, so the
  window is 24 h to 25 h wide);
- SMS (issue 6) feed the same counters: a Twilio refusal at message creation reaches the sinks as FAILED with
  `Recorded.result is None` and the Twilio code in `ledger.Outcome.code`; it is an attempted delivery and, unless
  it is our own throttling, a final failure (`guardrails.sms_failures.counts_toward_failure_rate`: recipient
  failures, 30007 carrier filtering, any other final error). A failure reported later by a status callback is
  added by `record_async_failure` (delivered − 1, failed + 1, then judged), as the ledger recount would see it.
  SMS carry no open pixel: the open-rate floor is never judged for an SMS campaign (`scan`);
- complaints per domain and opens come from the tracking slice through the `CampaignSignals` port
  (`guardrails.signals`, re-exported here).

The ledger stays the truth (every outcome is an event row); the counters are the fast path that lets every
dispatch batch re-judge its mailing: the failure rate is judged continuously from the minimum volume, the
open rate once, `open_rate_judge_after` after the send completes (the `scan` chore, with an injectable clock).
A crossing suspends the account (`sender.accounts_service.suspend`) unless ops waived that threshold for that
mailing when reinstating."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine

from crm import keys
from crm.db import as_utc
from crm.domain import AccountStatus, CampaignStatus, Channel, MessageStatus
from crm.schema import campaigns, messages
from guardrails.bounce_policy import Reason, classify_reply
from guardrails.policy import GuardrailPolicy
from guardrails.signals import CampaignSignals, NoSignals, Signals
from guardrails.sms_failures import counts_toward_failure_rate
from guardrails.thresholds import (
    TRANSACTIONAL_WINDOW,
    Evaluation,
    MailingEvaluation,
    MailingSnapshot,
    Threshold,
    evaluate,
)
from sender import accounts_service
from sender.hooks import Recorded

__all__ = ["CampaignSignals", "NoSignals", "Signals", "ThresholdMonitor"]

log = logging.getLogger(__name__)

# Seed counters from a recount, keeping the larger of each (two loops may seed at once with recounts of different
# ages; increments may have landed in between): never lower a counter, so the failure rate is never understated.
_SEED = """
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', KEYS[1], 'seeded', '1')
return redis.call('HGETALL', KEYS[1])
"""
WINDOW_TTL_S = int(TRANSACTIONAL_WINDOW.total_seconds()) + 3600
COMPLETED_LOOKBACK = timedelta(days=7)  # completed campaigns still re-judged for late complaints


def campaign_mailing(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


def tx_mailing(account_id: int) -> str:
    return f"tx:{account_id}"


@dataclass(frozen=True, slots=True)
class _Delta:
    attempted: int = 0
    failed: int = 0
    delivered: int = 0
    blocklist: str = ""


def deltas(batch: Sequence[Recorded]) -> dict[tuple[int, int | None], _Delta]:
    """Counter increments per (account, campaign or None for transactional sends) from one dispatch batch."""
    acc: dict[tuple[int, int | None], list[Any]] = {}
    for r in batch:
        m, o = r.message, r.outcome
        sms = m.get("channel") == Channel.SMS.value
        # An SMS was handed to Twilio when Twilio answered with a code (quiet hours, shaping, guards and render
        # failures carry none); e-mail when the transport returned a result.
        handed = r.result is not None or (sms and o.code is not None and not (o.error or "").startswith("render:"))
        if not handed and o.status != MessageStatus.SENT:
            continue  # held, suppressed, render failure: no delivery attempt
        cur = acc.setdefault((int(m["account_id"]), m["campaign_id"] or None), [0, 0, 0, ""])
        if int(m["attempts"] or 0) == 0:
            cur[0] += 1  # the first attempt of this message: one attempted delivery
        if o.status == MessageStatus.SENT:
            cur[2] += 1
        elif o.status == MessageStatus.FAILED and (not sms or counts_toward_failure_rate(o.code)):
            cur[1] += 1
        if r.result is not None and o.status in (MessageStatus.FAILED, MessageStatus.DEFERRED):
            text = r.result.text or ""
            if classify_reply(r.result.code, r.result.enhanced, text).reason is Reason.BLOCKLISTED:
                cur[3] = f"{r.result.code or ''} {r.result.enhanced or ''} {text}".strip()[:300]
    return {k: _Delta(*v) for k, v in acc.items()}


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}


def _window_sum(fields: Mapping[str, str], metric: str, now: float) -> int:
    low = int(now // 3600) - int(TRANSACTIONAL_WINDOW.total_seconds() // 3600)
    total = 0
    for k, v in fields.items():
        name, _, hour = k.partition(":")
        if name == metric and hour.isdigit() and int(hour) > low:
            total += int(v)
    return total


def snapshot_from(mailing: str, fields: Mapping[str, str], signals: Signals, now: float,
                  completed_at: datetime | None) -> MailingSnapshot:
    if mailing.startswith("tx:"):
        attempted, failed = _window_sum(fields, "a", now), _window_sum(fields, "f", now)
        delivered = _window_sum(fields, "d", now)
    else:
        attempted, failed = int(fields.get("attempted", 0)), int(fields.get("failed", 0))
        delivered = int(fields.get("delivered", 0))
    failed += signals.async_failures
    blocklisted = tuple(signals.blocklisted_by) + ((fields["blocklist"],) if fields.get("blocklist") else ())
    return MailingSnapshot(mailing, attempted=attempted, failed=failed, delivered=delivered,
                           unique_human_opens=signals.unique_human_opens, machine_opens=signals.machine_opens,
                           domains=signals.domains, completed_at=completed_at, blocklisted_by=blocklisted)


def waived(fields: Mapping[str, str]) -> set[str]:
    return {k.removeprefix("waived:") for k in fields if k.startswith("waived:")}


def effective_crossed(ev: MailingEvaluation, waivers: set[str]) -> list[Evaluation]:
    return [e for e in ev.crossed if e.threshold.value not in waivers]


@dataclass(frozen=True, slots=True)
class Crossing:
    account_id: int
    mailing: str
    reason: str
    at: float  # epoch seconds, when the crossing was recorded (before the suspension effects)
    flagged_at: float  # when the account's Redis flag was set


class ThresholdMonitor:
    """OutcomeSink + chores: keeps the counters, judges the thresholds, suspends on a crossing."""

    def __init__(self, engine: Engine, redis: Redis, policy_of: Callable[[int], GuardrailPolicy],
                 signals: CampaignSignals | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.redis = redis
        self.policy_of = policy_of
        self.signals: CampaignSignals = signals or NoSignals()
        self.clock = clock
        self.crossings: list[Crossing] = []  # this process's record (tests, logs)

    # -- the sink ------------------------------------------------------------------------------------------------
    async def record(self, batch: Sequence[Recorded]) -> None:
        changes = deltas(batch)
        if not changes:
            return
        now = self.clock()
        ts = now.timestamp()
        hour = int(ts // 3600)
        pipe = self.redis.pipeline(transaction=False)
        order: list[tuple[int, str, int]] = []  # (account, mailing, index of its HGETALL reply)
        for (aid, cid), d in changes.items():
            if cid is not None:
                key = keys.guardrail_counters(cid)
                for name, n in (("attempted", d.attempted), ("failed", d.failed), ("delivered", d.delivered)):
                    if n:
                        pipe.hincrby(key, name, n)
                if d.blocklist:
                    pipe.hset(key, "blocklist", d.blocklist)
                order.append((aid, campaign_mailing(cid), len(pipe)))
                pipe.hgetall(key)
            else:
                key = keys.guardrail_window(aid)
                for name, n in (("a", d.attempted), ("f", d.failed), ("d", d.delivered)):
                    if n:
                        pipe.hincrby(key, f"{name}:{hour}", n)
                if d.blocklist:
                    pipe.hset(key, "blocklist", d.blocklist)
                pipe.expire(key, WINDOW_TTL_S)
                order.append((aid, tx_mailing(aid), len(pipe)))
                pipe.hgetall(key)
            pipe.get(keys.account_status(aid))
        replies = await pipe.execute()
        for aid, mailing, i in order:
            fields, flag = _decode(replies[i]), replies[i + 1]  # each HGETALL is followed by its account's flag
            if flag is not None and (flag.decode() if isinstance(flag, bytes) else flag) != AccountStatus.ACTIVE:
                continue  # already stopped: its messages are held; nothing more to decide
            if mailing.startswith("campaign:") and "seeded" not in fields:
                fields = await self._seed(int(mailing.partition(":")[2]))
            await self._judge(aid, mailing, fields, None, "dispatch")

    async def _seed(self, campaign_id: int) -> dict[str, str]:
        """The campaign's counters recounted from the ledger (the truth): on its first batch, and after Redis
        lost the hash. The ledger already holds the batch being recorded, so the recount replaces the increments."""
        counts = await asyncio.to_thread(self._ledger_counts, campaign_id)
        args: list[str] = [str(x) for kv in counts.items() for x in kv]
        flat = await self.redis.eval(_SEED, 1, keys.guardrail_counters(campaign_id), *args)
        return _decode(dict(zip(flat[::2], flat[1::2], strict=True)))

    def _ledger_counts(self, campaign_id: int) -> dict[str, int]:
        handed = and_(messages.c.attempts > 0,
                      or_(messages.c.last_error.is_(None), ~messages.c.last_error.like("render:%")))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(messages.c.status, func.count()).where(messages.c.campaign_id == campaign_id, handed)
                .group_by(messages.c.status)).all()
        by = {status: int(n) for status, n in rows}
        sent, failed = by.get(MessageStatus.SENT.value, 0), by.get(MessageStatus.FAILED.value, 0)
        # Any message with a delivery attempt behind it, whatever became of it since (deferred, held, cancelled).
        return {"attempted": sum(by.values()), "failed": failed, "delivered": sent}

    # -- judging -------------------------------------------------------------------------------------------------
    async def _signals(self, mailing: str, now: datetime) -> Signals:
        kind, _, ident = mailing.partition(":")
        if kind == "tx":
            return await self.signals.transactional(int(ident), now - TRANSACTIONAL_WINDOW)
        return await self.signals.campaign(int(ident))

    async def evaluate_mailing(self, account_id: int, mailing: str, completed_at: datetime | None = None,
                               fields: Mapping[str, str] | None = None) -> tuple[MailingEvaluation, set[str]]:
        now = self.clock()
        if fields is None:
            fields = _decode(await self.redis.hgetall(accounts_service.waiver_key(mailing)))
            if mailing.startswith("campaign:") and "seeded" not in fields:
                fields = await self._seed(int(mailing.partition(":")[2]))
        signals = await self._signals(mailing, now)
        policy = await asyncio.to_thread(self.policy_of, account_id)
        snap = snapshot_from(mailing, fields, signals, now.timestamp(), completed_at)
        return evaluate(snap, now, policy), waived(fields)

    async def _judge(self, account_id: int, mailing: str, fields: Mapping[str, str] | None,
                     completed_at: datetime | None, detected_by: str) -> MailingEvaluation:
        ev, waivers = await self.evaluate_mailing(account_id, mailing, completed_at, fields)
        crossed = effective_crossed(ev, waivers)
        if crossed:
            await self._suspend(account_id, ev, crossed, detected_by)
        return ev

    async def _suspend(self, account_id: int, ev: MailingEvaluation, crossed: list[Evaluation],
                       detected_by: str) -> None:
        at = time.time()
        evidence = {
            "mailing": ev.mailing_id, "evaluated_at": ev.evaluated_at.isoformat(),
            "reason": crossed[0].threshold.value, "crossed": [e.evidence() for e in crossed],
            "crossed_at": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
            "detected_by": detected_by,
        }
        out = await accounts_service.suspend(self.engine, self.redis, account_id,
                                             crossed[0].threshold.suspension_reason, evidence)
        self.crossings.append(Crossing(account_id, ev.mailing_id, crossed[0].threshold.value, at, out.flagged_at))
        if out.changed:
            log.warning("account %s: %s crossed on %s", account_id, crossed[0].threshold.value, ev.mailing_id)

    async def check_campaign(self, account_id: int, campaign_id: int) -> MailingEvaluation:
        """Re-judge one campaign now (e.g. right after the tracking slice recorded a complaint)."""
        return await self._judge(account_id, campaign_mailing(campaign_id), None, None, "check")

    async def record_async_failure(self, account_id: int, campaign_id: int | None, code: int | None,
                                   was_delivered: bool = True) -> MailingEvaluation | None:
        """A final failure reported after the hand-off (an SMS status callback, issue 6): the message was
        counted delivered when the gateway accepted it; it is a failure now (the ledger recount of `_seed` says
        the same), and its mailing is judged at once. Call it once per message (the callback's first final
        status). Returns the evaluation, or None when nothing was counted or the account is already stopped."""
        if not counts_toward_failure_rate(code):
            return None
        pipe = self.redis.pipeline(transaction=False)
        if campaign_id is not None:
            key, failed, delivered = keys.guardrail_counters(campaign_id), "failed", "delivered"
            mailing = campaign_mailing(campaign_id)
        else:
            hour = int(self.clock().timestamp() // 3600)
            key, failed, delivered = keys.guardrail_window(account_id), f"f:{hour}", f"d:{hour}"
            mailing = tx_mailing(account_id)
        pipe.hincrby(key, failed, 1)
        if was_delivered:
            pipe.hincrby(key, delivered, -1)
        if campaign_id is None:
            pipe.expire(key, WINDOW_TTL_S)
        pipe.hgetall(key)
        pipe.get(keys.account_status(account_id))
        replies = await pipe.execute()
        fields, flag = _decode(replies[-2]), replies[-1]
        if flag is not None and (flag.decode() if isinstance(flag, bytes) else flag) != AccountStatus.ACTIVE:
            return None
        if campaign_id is not None and "seeded" not in fields:
            fields = await self._seed(campaign_id)
        return await self._judge(account_id, mailing, fields, None, "callback")

    # -- the chore -----------------------------------------------------------------------------------------------
    async def scan(self) -> int:
        """Re-judge sending and recently completed campaigns (complaints and blocklistings arrive after the
        hand-off) and judge each completed campaign's open rate once, when it is due. Returns campaigns judged."""
        now = self.clock()

        def rows() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(
                    select(campaigns.c.id, campaigns.c.account_id, campaigns.c.status, campaigns.c.completed_at,
                           campaigns.c.channel)
                    .where(or_(campaigns.c.status == CampaignStatus.SENDING.value,
                               (campaigns.c.status == CampaignStatus.COMPLETED.value)
                               & (campaigns.c.completed_at >= now - COMPLETED_LOOKBACK)))))

        judged = 0
        stopped: dict[int, bool] = {}
        for r in await asyncio.to_thread(rows):
            if r.account_id not in stopped:
                flag = await self.redis.get(keys.account_status(r.account_id))
                stopped[r.account_id] = flag is not None and (
                    flag.decode() if isinstance(flag, bytes) else flag) != AccountStatus.ACTIVE
            if stopped[r.account_id]:
                continue
            mailing = campaign_mailing(r.id)
            completed_at = as_utc(r.completed_at)
            open_due = False
            # SMS have no open pixel: an open-rate floor would suspend every SMS campaign (issue 6).
            if completed_at is not None and r.channel != Channel.SMS.value:
                policy = await asyncio.to_thread(self.policy_of, r.account_id)
                if now >= completed_at + policy.open_rate_judge_after:
                    # Judged once (« par événement de publipostage »): the first worker to get here does it.
                    open_due = bool(await self.redis.hsetnx(keys.guardrail_counters(r.id), "open_judged_at",
                                                            now.isoformat()))
            ev = await self._judge(r.account_id, mailing, None, completed_at if open_due else None, "scan")
            if ev.crossed:
                stopped[r.account_id] = True
            judged += 1
        return judged

    # -- statistics ----------------------------------------------------------------------------------------------
    async def campaign_view(self, account_id: int, campaign_id: int, completed_at: datetime | None
                            ) -> dict[str, Any]:
        """Each threshold with its current value, limit and distance (campaign statistics)."""
        mailing = campaign_mailing(campaign_id)
        fields = _decode(await self.redis.hgetall(keys.guardrail_counters(campaign_id)))
        if "seeded" not in fields:
            fields = await self._seed(campaign_id)
        open_judged = "open_judged_at" in fields
        ev, waivers = await self.evaluate_mailing(account_id, mailing, completed_at, fields)
        policy = await asyncio.to_thread(self.policy_of, account_id)
        items = []
        for e in ev.evaluations:
            d = e.evidence()
            d["waived"] = e.threshold.value in waivers
            if e.threshold is Threshold.OPEN_RATE and completed_at is not None and not open_judged:
                # Judged once, by the scan chore: until then show the value, not a verdict.
                d.update(judged=False, crossed=False,
                         note=f"judged at {(completed_at + policy.open_rate_judge_after).isoformat()}")
            items.append(d)
        return {"mailing": mailing, "evaluated_at": ev.evaluated_at.isoformat(),
                "counters": {"attempted": int(fields.get("attempted", 0)), "failed": int(fields.get("failed", 0)),
                             "delivered": int(fields.get("delivered", 0))},
                "open_rate_judged_at": fields.get("open_judged_at"),
                "thresholds": items, "crossed": [d["threshold"] for d in items if d["crossed"] and not d["waived"]]}
