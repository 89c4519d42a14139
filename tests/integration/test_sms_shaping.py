"""SMS shaping across worker processes (issue 6 x 7): two workers share one sender's rate through the Redis token
bucket of `sender.shaper`, instead of sending at twice the rate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from crm import keys
from crm.domain import MessageStatus
from envoi.composition import sms_tokens
from sender.queue import Claimed, QueueItem
from sender.sms_dispatch import SmsBatchOutcome, SmsRoad
from sender.sms_transport import SmsEnvelope, SmsSender
from tests.integration.conftest import SENDER
from tests.integration.sms_support import SMS_FROM, Clock, SmsThreadWorker, ok, setup_sms_campaign
from tests.integration.test_sms_road import TUESDAY_10H, TWILIO_ENV
from tests.support.stack import wait_until
from tests.support.twilio_server import TwilioTestServer

RATE = 5.0  # SMS per second for the one sender, all workers together
N = 30


@pytest.fixture
def twilio() -> Iterator[TwilioTestServer]:
    with TwilioTestServer() as srv:
        yield srv


def _batch(n: int, first_id: int) -> list[tuple[Claimed, dict[str, Any], SmsEnvelope]]:
    sender = SmsSender(from_=SMS_FROM)
    return [(Claimed(QueueItem(first_id + i, 1, 0, False), "s", f"{i}-0", 0, False), {"id": first_id + i},
             SmsEnvelope(first_id + i, f"+336128{i:05d}", "x", sender)) for i in range(n)]


async def test_the_bucket_is_shared_by_the_roads_of_all_workers(redis_url: str) -> None:
    """Two workers' roads offered 20 SMS each for one sender at the same instant: together they start one
    second's worth (the burst), not one each; the rest is deferred without an attempt, spread at the rate."""
    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(keys.shaping_bucket(f"sms:{SMS_FROM}"))
        roads = [SmsRoad(None, None, None, rate_for=lambda _k: RATE, tokens=sms_tokens(redis))  # type: ignore[arg-type]
                 for _ in range(2)]
        outs = [SmsBatchOutcome(), SmsBatchOutcome()]
        kept = await asyncio.gather(*(r._take_tokens(_batch(20, 1000 * (i + 1)), o)
                                      for i, (r, o) in enumerate(zip(roads, outs, strict=True))))
        assert sum(len(k) for k in kept) == RATE
        deferred = [o for out in outs for o in out.outcomes]
        assert len(deferred) == 40 - RATE
        assert all(o.status == MessageStatus.DEFERRED and not o.counts_attempt for o in deferred)
        # Without the shared bucket each road would have kept up to its own burst (per-process shaping only).
        alone = SmsRoad(None, None, None, rate_for=lambda _k: RATE)  # type: ignore[arg-type]
        assert len(alone._shape(_batch(20, 5000), SmsBatchOutcome())) > RATE
    finally:
        await redis.aclose()


def test_two_workers_share_one_senders_rate(make_env: Any, twilio: TwilioTestServer) -> None:
    env = make_env(**TWILIO_ENV)
    _, client = env.account()
    mobiles = [f"+336127000{i:02d}" for i in range(N)]
    cid, _ = setup_sms_campaign(client, mobiles, sender=SENDER, text="Offre du jour")
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    clock = Clock(TUESDAY_10H)
    with SmsThreadWorker(env.settings, env.engine, twilio, clock, rate_per_sender=RATE), \
            SmsThreadWorker(env.settings, env.engine, twilio, clock, rate_per_sender=RATE):
        wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["status"] == "completed", 30,
                   message="shaped campaign completed")
    starts = sorted(r.received_at for r in twilio.requests)
    assert sorted(r.form["To"] for r in twilio.requests) == mobiles  # each exactly once
    # A bucket of RATE tokens (burst: one second), refilled at RATE/s for both workers together: any window of
    # w seconds holds at most RATE * (1 + w) starts (+1 for the rounding of the refill). Two workers pacing on
    # their own would reach 2 * RATE/s.
    for w in (1.0, 2.0, 3.0):
        most = max(sum(1 for t in starts if s <= t < s + w) for s in starts)
        assert most <= RATE * (1 + w) + 1, (w, most)
    span = starts[-1] - starts[0]
    assert span >= (N - RATE) / RATE * 0.9, span
    print(f"\nsms shaping, 2 workers, {RATE:g}/s shared: {N} SMS in {span:.2f} s "
          f"({(N - 1) / span:.1f}/s incl. the 1 s burst)")
