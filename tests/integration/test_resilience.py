"""Nothing accepted is lost: a worker killed with SIGKILL mid-campaign, Redis restarted empty mid-campaign."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from envoi.redis_server import RedisServer
from tests.integration.conftest import ok, setup_campaign
from tests.support.stack import WorkerProcess, wait_until

pytestmark = pytest.mark.slow


def _recipients(env) -> collections.Counter[str]:
    return collections.Counter(m.rcpt_tos[0] for m in list(env.smtp.messages))


def test_worker_killed_mid_campaign_loses_nothing_and_duplicates_are_bounded(make_env, capsys):
    env = make_env(ENVOI_RECLAIM_IDLE_SECONDS="2", ENVOI_BATCH_SIZE="100")
    _, client = env.account()
    emails = [f"k{i}@example.com" for i in range(5000)]
    cid = setup_campaign(client, emails)
    first = WorkerProcess(env.settings, 0).start()
    try:
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) >= 1000, timeout=120)
        first.kill()  # SIGKILL: no drain, entries in flight stay pending in the consumer group
        delivered_before = len(env.smtp.messages)
        second = WorkerProcess(env.settings, 1).start()
        try:
            env.smtp.wait_for(lambda: len(_recipients(env)) == 5000, timeout=180)
            view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v,
                              60, interval=0.2, message="campaign completed")
        finally:
            assert second.terminate() == 0
    finally:
        first.kill()
    counts = _recipients(env)
    duplicates = sum(n - 1 for n in counts.values())
    in_flight_window = env.settings.batch_size * 4  # DispatchConfig.concurrency batches per worker
    with capsys.disabled():
        print(f"\n[SIGKILL] delivered before kill={delivered_before} total={len(env.smtp.messages)} "
              f"unique={len(counts)} duplicates={duplicates} (bound {in_flight_window})")
    assert set(counts) == set(emails)
    assert duplicates <= in_flight_window
    assert view["counters"]["sent"] == 5000


def test_redis_restarted_empty_mid_campaign_loses_nothing(make_env, tmp_path: Path, capsys):
    redis = RedisServer(tmp_path / "redis-own", appendonly=False).start()
    try:
        env = make_env(ENVOI_REDIS_URL=redis.url)
        _, client = env.account()
        emails = [f"r{i}@example.com" for i in range(3000)]
        cid = setup_campaign(client, emails)
        with env.worker():
            ok(client.post(f"/v1/campaigns/{cid}/send"))
            env.smtp.wait_for(lambda: len(env.smtp.messages) >= 600, timeout=120)
            redis.stop()  # everything queued in Redis is gone (no AOF, no RDB)
            redis.start()
            env.smtp.wait_for(lambda: len(_recipients(env)) == 3000, timeout=180)
            view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v,
                              60, interval=0.2, message="campaign completed")
    finally:
        redis.stop()
    counts = _recipients(env)
    duplicates = sum(n - 1 for n in counts.values())
    with capsys.disabled():
        print(f"\n[redis restart] total={len(env.smtp.messages)} unique={len(counts)} duplicates={duplicates}")
    assert set(counts) == set(emails)
    assert view["counters"]["sent"] == 3000


def test_sigterm_drains_in_flight_sends_and_leaves_the_rest_queued(make_env):
    env = make_env(ENVOI_BATCH_SIZE="50")
    _, client = env.account()
    emails = [f"d{i}@example.com" for i in range(3000)]
    cid = setup_campaign(client, emails)
    worker = WorkerProcess(env.settings, 0).start()
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    env.smtp.wait_for(lambda: len(env.smtp.messages) >= 300, timeout=120)
    assert worker.terminate(timeout=30) == 0  # SIGTERM: stop claiming, finish in-flight batches, exit cleanly
    view = ok(client.get(f"/v1/campaigns/{cid}"))
    counters = view["counters"]
    # every message the SMTP server accepted is recorded as sent; the rest is still queued, nothing failed
    assert counters["sent"] == len(_recipients(env))
    assert counters["failed"] == 0 and counters["sent"] + counters["queued"] == view["audience"]["queued"]
    with env.worker():
        env.smtp.wait_for(lambda: len(_recipients(env)) == 3000, timeout=180)
    assert sum(n - 1 for n in _recipients(env).values()) == 0  # a clean stop duplicates nothing
