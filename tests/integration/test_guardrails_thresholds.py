"""Issue 3: thresholds judged by the monitor against real Redis and the database, with a controllable clock.

The open rate is judged once, `open_rate_judge_after` (48 h) after the send completes; complaints per recipient
domain cross only with a burst at one domain; transactional sends are judged over a rolling 24 h window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from crm import keys
from crm.domain import MessageKind, MessageStatus
from crm.ledger import Outcome
from crm.schema import campaigns
from guardrails.signals import Signals
from guardrails.thresholds import DomainCounters
from sender.guardrail_policy import PolicyCache
from sender.hooks import Recorded
from sender.thresholds_monitor import ThresholdMonitor
from sender.transport import DeliveryResult
from sender.transport import Outcome as Wire
from tests.integration.conftest import ok, setup_campaign

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class FakeSignals:
    """What the tracking slice would report, per campaign."""

    def __init__(self) -> None:
        self.by_campaign: dict[int, Signals] = {}

    async def campaign(self, campaign_id: int) -> Signals:
        return self.by_campaign.get(campaign_id, Signals())

    async def transactional(self, account_id: int, since: datetime) -> Signals:
        return Signals()


class World:
    """The monitor with a fake clock and fake tracking signals; each `run` gets a Redis client of its own loop."""

    def __init__(self, env) -> None:
        self.env = env
        self.clock = Clock(T0)
        self.signals = FakeSignals()

    def run(self, fn):
        async def go():
            redis = Redis.from_url(self.env.settings.redis_url)
            monitor = ThresholdMonitor(self.env.engine, redis, PolicyCache(self.env.engine, {}, ttl_s=0).get,
                                       self.signals, self.clock)
            try:
                return await fn(monitor)
            finally:
                await redis.aclose()

        return asyncio.run(go())


@pytest.fixture
def world(make_env) -> World:
    return World(make_env())


def _completed_campaign(env, emails, completed_at, delivered):
    account_id, client = env.account(f"acct-{len(emails)}-{delivered}-{completed_at.timestamp()}")
    cid = setup_campaign(client, emails)
    with env.engine.begin() as conn:
        conn.execute(update(campaigns).where(campaigns.c.id == cid).values(status="completed",
                                                                           completed_at=completed_at))
    return account_id, client, cid


def test_open_rate_is_judged_once_at_the_configured_time(world):
    env, clock, signals = world.env, world.clock, world.signals
    low_account, low_client, low = _completed_campaign(env, ["a@example.com"], T0, 1000)
    _, high_client, high = _completed_campaign(env, ["b@example.com"], T0, 1000)
    signals.by_campaign[low] = Signals(unique_human_opens=49, machine_opens=400)  # 4.9 %: below the 5 % floor
    signals.by_campaign[high] = Signals(unique_human_opens=50)  # exactly 5 %: not below it

    async def seed(m):
        for cid in (low, high):
            await m.redis.hset(keys.guardrail_counters(cid), mapping={"attempted": 1000, "delivered": 1000})
    world.run(seed)

    clock.now = T0 + timedelta(hours=47, minutes=59)
    world.run(lambda m: m.scan())
    assert ok(low_client.get("/v1/account"))["status"] == "active", "not judged before 48 h"
    view = world.run(lambda m: m.campaign_view(low_account, low, T0))
    opens = next(t for t in view["thresholds"] if t["threshold"] == "open_rate")
    assert opens["judged"] is False and "judged at 2026-11-04T09:00" in opens["note"]
    assert opens["value"] == 0.049 and opens["limit"] == 0.05
    api = ok(low_client.get(f"/v1/campaigns/{low}/stats"))["guardrails"]
    assert {t["threshold"] for t in api["thresholds"]} == {"failure_rate", "open_rate", "blocklisted"}

    clock.now = T0 + timedelta(hours=48)
    world.run(lambda m: m.scan())
    low_view = ok(low_client.get("/v1/account"))
    assert low_view["status"] == "suspended" and low_view["suspension_reason"] == "open_rate"
    crossed = low_view["suspension_evidence"]["crossed"][0]
    assert (crossed["numerator"], crossed["denominator"]) == (49, 1000), "machine opens are not counted"
    assert ok(high_client.get("/v1/account"))["status"] == "active"

    # Judged once: later opens do not bring a second judgement of the high campaign either way.
    signals.by_campaign[high] = Signals(unique_human_opens=1)
    clock.now = T0 + timedelta(hours=60)
    world.run(lambda m: m.scan())
    assert ok(high_client.get("/v1/account"))["status"] == "active"


def test_a_complaint_burst_at_one_domain_suspends_but_thin_complaints_across_domains_do_not(world):
    env, clock, signals = world.env, world.clock, world.signals
    _, burst_client, burst = _completed_campaign(env, ["c@example.com"], T0, 1)
    _, thin_client, thin = _completed_campaign(env, ["d@example.com"], T0, 2)
    signals.by_campaign[burst] = Signals(domains=(
        DomainCounters("orange.fr", 1000, 6), DomainCounters("free.fr", 5000, 1)))  # 6 ‰ at orange.fr
    signals.by_campaign[thin] = Signals(domains=tuple(
        DomainCounters(f"d{i}.fr", 200, 1) for i in range(6)))  # 5 ‰ overall... one complaint per domain
    clock.now = T0 + timedelta(hours=1)
    world.run(lambda m: m.scan())
    view = ok(burst_client.get("/v1/account"))
    assert view["status"] == "suspended" and view["suspension_reason"] == "complaint_rate"
    assert view["suspension_evidence"]["crossed"][0]["domain"] == "orange.fr"
    assert ok(thin_client.get("/v1/account"))["status"] == "active"


def _recorded(mid, account_id, status, attempts=0, code=250, text="ok", enhanced=None):
    m = {"id": mid, "account_id": account_id, "campaign_id": None, "contact_id": None, "channel": "email",
         "kind": MessageKind.TRANSACTIONAL.value, "recipient": f"x{mid}@example.com",
         "recipient_domain": "example.com", "status": "queued", "attempts": attempts}
    wire = Wire.SENT if status is MessageStatus.SENT else Wire.PERMANENT
    return Recorded(Outcome(mid, status), m, DeliveryResult(mid, wire, code, enhanced, text))


def test_transactional_sends_are_judged_over_a_rolling_24h_window(world):
    env, clock = world.env, world.clock
    account_id, client = env.account("tx")
    sent = [_recorded(i, account_id, MessageStatus.SENT) for i in range(1, 91)]
    failed = [_recorded(i, account_id, MessageStatus.FAILED, code=550, enhanced="5.1.1", text="User unknown")
              for i in range(91, 111)]
    clock.now = T0
    world.run(lambda m: m.record(failed[:10] + sent[:40]))  # 10/50: below the minimum volume
    clock.now = T0 + timedelta(hours=25)  # the first 50 left the window
    world.run(lambda m: m.record(failed[10:] + sent[40:]))  # 10/60 within the window: still below 100
    assert ok(client.get("/v1/account"))["status"] == "active"
    more = [_recorded(i, account_id, MessageStatus.FAILED, code=550, enhanced="5.1.1", text="User unknown")
            for i in range(200, 245)]
    world.run(lambda m: m.record(more))  # 55/105 within the window
    view = ok(client.get("/v1/account"))
    assert view["status"] == "suspended" and view["suspension_evidence"]["mailing"] == f"tx:{account_id}"
    assert view["suspension_evidence"]["crossed"][0]["denominator"] == 105


def test_campaign_counters_are_recounted_from_the_ledger_when_redis_lost_them(world):
    from sqlalchemy import insert

    from crm.db import utcnow
    from crm.schema import contacts, messages

    env = world.env
    account_id, client, cid = _completed_campaign(env, ["e@example.com"], T0, 3)
    now = utcnow()
    with env.engine.begin() as conn:
        ids = []
        for i in range(120):
            contact = conn.execute(insert(contacts).values(account_id=account_id, email=f"k{i}@example.com",
                                                           attributes={}, created_at=now, updated_at=now)
                                   .returning(contacts.c.id)).scalar_one()
            failed = i < 20
            ids.append(conn.execute(insert(messages).values(
                account_id=account_id, campaign_id=cid, contact_id=contact, channel="email", kind="marketing",
                recipient=f"k{i}@example.com", recipient_domain="example.com",
                status="failed" if failed else "sent", attempts=1, last_code=550 if failed else 250,
                queued_at=now, updated_at=now).returning(messages.c.id)).scalar_one())
    # The hash was lost (Redis restarted without persistence): one more failure arrives.
    last = _recorded(ids[0], account_id, MessageStatus.FAILED, attempts=0, code=550, enhanced="5.1.1",
                     text="User unknown")
    last.message["campaign_id"] = cid
    world.run(lambda m: m.record([last]))
    view = ok(client.get("/v1/account"))
    assert view["status"] == "suspended", "20 failed of 120 attempted in the ledger: 16.7 % > 10 %"
    crossed = view["suspension_evidence"]["crossed"][0]
    assert (crossed["numerator"], crossed["denominator"]) == (20, 120)
