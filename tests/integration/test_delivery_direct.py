"""Issue 7: direct-to-MX delivery against a local authoritative DNS server and real SMTP servers, with the shaping
state in a real Redis — MX preference and fallback, implicit and null MX, STARTTLS required, connection limits
shared by two transports (two worker processes), reaction to 421, suspension, rate deferrals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from sender.direct import DirectConfig, DirectMxTransport
from sender.hooks import Action
from sender.mx import MxResolver
from sender.shaper import AdaptiveConfig, Shaper
from sender.shaping import ShapingPolicy
from sender.shaping_guard import ShapingGuard
from sender.transport import Envelope, Outcome
from tests.support.dns_server import DnsServer
from tests.support.smtp_servers import Faults, smtp_server
from tests.support.stack import free_port

POLICY = ShapingPolicy(max_connections=4, messages_per_connection=10, rate_per_s=1000.0)


@pytest.fixture
def dns_srv() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def envelope(i: int, rcpt: str) -> Envelope:
    data = (f"From: Shop <news@shop.test>\r\nTo: <{rcpt}>\r\nSubject: n{i}\r\nMessage-ID: <{i}@shop.test>\r\n"
            f"\r\nHello {i}\r\n").encode()
    return Envelope(i, f"b.{i}@bounces.shop.test", rcpt, data)


def transport(dns_srv: DnsServer, redis: Redis, ports: dict[str, int], *, policy: ShapingPolicy = POLICY,
              adaptive: AdaptiveConfig | None = None, lease_wait_s: float = 5.0) -> DirectMxTransport:
    return DirectMxTransport(
        MxResolver(dns_srv.async_resolver()), Shaper(redis, adaptive), lambda _dest, _domain: policy,
        DirectConfig(port=free_port(), port_overrides=ports, timeout_s=3.0, lease_wait_s=lease_wait_s,
                     helo_name="envoi.test"))


@contextlib.asynccontextmanager
async def greeting_421() -> AsyncIterator[int]:
    """An MX that sheds load at the greeting (RFC 5321 §3.8: 421 and close)."""
    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"421 4.7.0 mx busy, try again later\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_best_mx_first_and_the_answer_is_cached_for_its_ttl(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "20 mx2.shop.test.", "10 mx1.shop.test.", ttl=300)
    dns_srv.zone.add("mx1.shop.test", "A", "127.0.0.1")
    dns_srv.zone.add("mx2.shop.test", "A", "127.0.0.1")
    with smtp_server() as mx1, smtp_server() as mx2:
        t = transport(dns_srv, redis, {"mx1.shop.test": mx1.port, "mx2.shop.test": mx2.port})
        for round_ in range(2):
            results = await t.deliver([envelope(round_ * 10 + i, f"u{i}@shop.test") for i in range(5)])
            assert [r.outcome for r in results] == [Outcome.SENT] * 5
        await t.close()
    assert len(mx1.messages) == 10 and not mx2.messages
    assert dns_srv.query_count("shop.test", "MX") == 1  # second batch served from the TTL cache


async def test_short_ttl_is_respected(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 mx1.shop.test.", ttl=1)
    dns_srv.zone.add("mx1.shop.test", "A", "127.0.0.1", ttl=1)
    now = [1000.0]
    resolver = MxResolver(dns_srv.async_resolver(), min_ttl=1, clock=lambda: now[0])
    await resolver.route("shop.test")
    await resolver.route("shop.test")
    assert dns_srv.query_count("shop.test", "MX") == 1
    now[0] += 1.5  # past the record's TTL
    await resolver.route("shop.test")
    assert dns_srv.query_count("shop.test", "MX") == 2


async def test_falls_back_to_next_mx_on_refused_connection_and_421_greeting(dns_srv: DnsServer,
                                                                              redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 dead.shop.test.", "20 busy.shop.test.", "30 good.shop.test.")
    for host in ("dead", "busy", "good"):
        dns_srv.zone.add(f"{host}.shop.test", "A", "127.0.0.1")
    async with greeting_421() as busy_port:
        with smtp_server() as good:
            t = transport(dns_srv, redis, {"dead.shop.test": free_port(), "busy.shop.test": busy_port,
                                           "good.shop.test": good.port})
            results = await t.deliver([envelope(i, f"u{i}@shop.test") for i in range(6)])
            await t.close()
    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    assert sorted(m.rcpt_tos[0] for m in good.messages) == sorted(f"u{i}@shop.test" for i in range(6))


async def test_every_mx_down_is_temporary_and_nothing_is_sent_twice(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 a.shop.test.", "20 b.shop.test.")
    dns_srv.zone.add("a.shop.test", "A", "127.0.0.1")
    dns_srv.zone.add("b.shop.test", "A", "127.0.0.1")
    t = transport(dns_srv, redis, {"a.shop.test": free_port(), "b.shop.test": free_port()})
    results = await t.deliver([envelope(1, "u@shop.test")])
    await t.close()
    assert results[0].outcome is Outcome.TRANSIENT and results[0].code is None


async def test_implicit_mx_null_mx_and_missing_domain(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("implicit.test", "A", "127.0.0.1")  # no MX: the domain itself (RFC 5321 §5.1)
    dns_srv.zone.add_null_mx("nomail.test")  # RFC 7505
    with smtp_server() as mx:
        t = transport(dns_srv, redis, {"implicit.test": mx.port})
        results = await t.deliver([envelope(1, "a@implicit.test"), envelope(2, "b@nomail.test"),
                                   envelope(3, "c@nxdomain.test")])
        await t.close()
    sent, null_mx, missing = results
    assert sent.outcome is Outcome.SENT and [m.rcpt_tos for m in mx.messages] == [("a@implicit.test",)]
    assert (null_mx.outcome, null_mx.code, null_mx.enhanced) == (Outcome.PERMANENT, 556, "5.1.10")
    assert (missing.outcome, missing.enhanced) == (Outcome.PERMANENT, "5.1.2")
    assert mx.connections == 1  # no connection attempted for the null MX


async def test_starttls_required_never_falls_back_to_cleartext(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("clear.test", "MX", "10 mx.clear.test.")
    dns_srv.zone.add("mx.clear.test", "A", "127.0.0.1")
    dns_srv.zone.add("tls.test", "MX", "10 mx.tls.test.")
    dns_srv.zone.add("mx.tls.test", "A", "127.0.0.1")
    required = ShapingPolicy(4, 10, 1000.0, tls_required=True)
    with smtp_server() as clear, smtp_server(tls=True) as tls:
        t = transport(dns_srv, redis, {"mx.clear.test": clear.port, "mx.tls.test": tls.port}, policy=required)
        refused, sent = await t.deliver([envelope(1, "a@clear.test"), envelope(2, "b@tls.test")])
        await t.close()
    assert refused.outcome is Outcome.TRANSIENT and "STARTTLS required" in refused.text
    assert not clear.messages
    assert sent.outcome is Outcome.SENT and tls.messages[0].tls


async def test_connection_limit_is_shared_by_two_workers(dns_srv: DnsServer, redis: Redis,
                                                         redis_url: str) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 mx.shop.test.")
    dns_srv.zone.add("mx.shop.test", "A", "127.0.0.1")
    policy = ShapingPolicy(max_connections=3, messages_per_connection=5, rate_per_s=1000.0)
    other = Redis.from_url(redis_url)  # the second "process" has its own Redis client and resolver
    with smtp_server() as mx:
        a = transport(dns_srv, redis, {"mx.shop.test": mx.port}, policy=policy)
        b = transport(dns_srv, other, {"mx.shop.test": mx.port}, policy=policy)
        batches = [[envelope(k * 100 + i, f"u{k}-{i}@shop.test") for i in range(30)] for k in range(4)]
        results = await asyncio.gather(*(t.deliver(batch) for t, batch in zip([a, b, a, b], batches, strict=True)))
        await a.close()
        await b.close()
    await other.aclose()
    assert all(r.outcome is Outcome.SENT for rs in results for r in rs)
    assert len(mx.messages) == 120
    assert 1 <= mx.max_concurrent <= 3
    assert max(mx.messages_per_connection().values()) <= 5
    assert await redis.zcard("envoi:{dsite:shop.test}:conns") == 0  # every lease given back


async def test_421_slows_the_destination_down_and_it_recovers(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 mx.shop.test.")
    dns_srv.zone.add("mx.shop.test", "A", "127.0.0.1")
    policy = ShapingPolicy(max_connections=4, messages_per_connection=5, rate_per_s=100.0)
    adaptive = AdaptiveConfig(step=0.25, recover_every_s=0.0)
    shaper = Shaper(redis, adaptive)
    dest = "site:shop.test"
    with smtp_server(Faults(close_421_rcpts=frozenset({"slow@shop.test"}))) as mx:
        t = transport(dns_srv, redis, {"mx.shop.test": mx.port}, policy=policy, adaptive=adaptive)
        [r] = await t.deliver([envelope(1, "slow@shop.test")])
        assert (r.code, r.enhanced) == (421, "4.7.0")
        state = await shaper.state(dest)
        assert (state.rate_factor, state.connection_factor) == (0.5, 0.5)
        # Slowed: half the rate from the token bucket, half the connections at the server.
        _, rate = await shaper.take_tokens(dest, 1, policy)
        assert rate == pytest.approx(50.0)
        mx.max_concurrent = 0
        results = await t.deliver([envelope(10 + i, f"u{i}@shop.test") for i in range(40)])
        assert all(r.outcome is Outcome.SENT for r in results)
        assert mx.max_concurrent <= 2
        # ...and the successes raised it again, additively: 0.5 → 0.75 → 1.0.
        assert (await shaper.state(dest)).rate_factor == pytest.approx(0.75)
        await t.deliver([envelope(99, "again@shop.test")])
        assert (await shaper.state(dest)).rate_factor == pytest.approx(1.0)
        await t.close()


async def test_repeated_temporary_failures_suspend_and_defer_without_attempts(dns_srv: DnsServer,
                                                                             redis: Redis) -> None:
    dns_srv.zone.add("down.test", "MX", "10 mx.down.test.")
    dns_srv.zone.add("mx.down.test", "A", "127.0.0.1")
    adaptive = AdaptiveConfig(suspend_after=2, suspend_s=1.0)
    t = transport(dns_srv, redis, {"mx.down.test": free_port()}, adaptive=adaptive)
    shaper = Shaper(redis, adaptive)
    guard = ShapingGuard(MxResolver(dns_srv.async_resolver()), shaper, lambda _d, _n: POLICY)
    messages = [{"id": 7, "recipient": "a@down.test", "recipient_domain": "down.test"}]
    assert await guard.check(messages) == {}
    for _ in range(2):
        [r] = await t.deliver([envelope(7, "a@down.test")])
        assert r.outcome is Outcome.TRANSIENT
    assert "site:down.test" in await shaper.suspended_for(["site:down.test"])
    verdict = (await guard.check(messages))[7]
    assert verdict.action is Action.DEFER and verdict.until is not None and verdict.until > time.time()
    [r] = await t.deliver([envelope(7, "a@down.test")])  # the transport refuses too, without dialling
    assert r.enhanced == "4.4.5" and "suspended" in r.text
    deadline = time.monotonic() + 5
    while await shaper.suspended_for(["site:down.test"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # bounded wait for the 1 s suspension to lapse
    assert await guard.check(messages) == {}
    await t.close()


async def test_guard_defers_what_the_rate_does_not_allow(dns_srv: DnsServer, redis: Redis) -> None:
    dns_srv.zone.add("shop.test", "MX", "10 mx.shop.test.")
    dns_srv.zone.add("other.test", "MX", "10 mx2.shop.test.")  # same site: shares the budget
    dns_srv.zone.add("mx.shop.test", "A", "127.0.0.1")
    dns_srv.zone.add("mx2.shop.test", "A", "127.0.0.1")
    dns_srv.zone.add_null_mx("nomail.test")
    policy = ShapingPolicy(max_connections=2, messages_per_connection=10, rate_per_s=5.0)
    guard = ShapingGuard(MxResolver(dns_srv.async_resolver()), Shaper(redis), lambda _d, _n: policy)
    messages = [{"id": i, "recipient": f"u{i}@{'shop' if i % 2 else 'other'}.test"} for i in range(12)]
    messages.append({"id": 99, "recipient": "x@nomail.test"})  # the transport fails it: not the guard's job
    before = time.time()
    verdicts = await guard.check(messages)
    assert len(verdicts) == 7 and 99 not in verdicts  # a burst of 5 (one second at 5 msg/s), 7 deferred
    dues = sorted(v.until for v in verdicts.values() if v.until is not None)
    assert all(v.action is Action.DEFER for v in verdicts.values())
    assert before < dues[0] and dues[-1] - dues[0] == pytest.approx(6 / 5.0, abs=0.01)  # spread at the rate
