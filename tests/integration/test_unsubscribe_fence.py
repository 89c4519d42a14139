"""The hand-off fence against a real Redis: the guard and the unsubscribe serialise, and the unsubscribe waits
for the hand-offs it raced with (unsubscribe.fence)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from crm import keys
from unsubscribe.fence import Candidate, SuppressionFence


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _c(mid: int, address: str = "ana@example.com", account: int = 1) -> Candidate:
    return Candidate(mid, account, "email", address)


async def test_a_suppression_published_first_is_refused_by_the_guard(redis):
    fence = SuppressionFence(redis)
    assert await fence.publish(1, "email", "Ana@Example.com") is True  # nothing in flight: returns at once
    assert await fence.admit([_c(10), _c(11, "bob@example.com"), _c(12, "ana@example.com", account=2)]) == {10}
    await fence.retract(1, "email", "ana@example.com")
    assert await fence.admit([_c(13)]) == set()


async def test_an_unsubscribe_racing_a_hand_off_waits_until_it_is_released(redis):
    fence = SuppressionFence(redis, wait_s=10)
    assert await fence.admit([_c(20), _c(21)]) == set()  # two messages to ana in flight (two batches)
    publish = asyncio.create_task(fence.publish(1, "email", "ana@example.com"))
    await asyncio.sleep(0)  # let it run its script
    await asyncio.wait_for(_until(lambda: redis.zscore(keys.suppression_set(1, "email"), "ana@example.com")), 5)
    assert await fence.admit([_c(22)]) == {22}  # a later guard check sees the suppression
    await fence.release([_c(20)])
    await asyncio.sleep(0.05)
    assert not publish.done()  # message 21 is still being handed off
    await fence.release([_c(21), _c(22)])
    assert await asyncio.wait_for(publish, 5) is True


async def test_the_wait_is_bounded_when_a_hand_off_never_ends(redis):
    fence = SuppressionFence(redis, wait_s=0.2, lease_ms=60_000)
    await fence.admit([_c(30)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await fence.publish(1, "email", "ana@example.com") is False
    assert 0.2 <= loop.time() - started < 2
    assert 0 < await redis.pttl(keys.inflight(1, "email", "ana@example.com")) <= 60_000  # the lease expires it


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not await predicate():
        await asyncio.sleep(0.005)


async def test_redis_unreachable_answers_503_keeps_the_sql_and_a_replay_completes_the_fence(make_env, redis):
    import httpx
    from fastapi import FastAPI

    from envoi.composition import link_signer
    from tests.integration.unsubscribe_support import campaign_with_tokens, suppressed
    from tests.support.stack import free_port
    from unsubscribe.service import UnsubscribeService
    from unsubscribe.web import build_router

    env = make_env()
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["ivy@example.com"])
    path = f"/u/{tokens['ivy@example.com']}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    async def one_click(redis_client: Redis) -> httpx.Response:
        app = FastAPI()
        app.include_router(build_router(env.engine, link_signer(env.settings),
                                        UnsubscribeService(env.engine, SuppressionFence(redis_client))))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://envoi.test") as http:
            return await http.post(path, content=b"List-Unsubscribe=One-Click", headers=form)

    down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)  # nothing listens there
    try:
        r = await one_click(down)
    finally:
        await down.aclose()
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert len(suppressed(env, account_id, "ivy@example.com")) == 1  # the SQL part is kept
    assert (await one_click(redis)).status_code == 200  # the replay completes the fence
    assert await redis.zscore(keys.suppression_set(account_id, "email"), "ivy@example.com") is not None
