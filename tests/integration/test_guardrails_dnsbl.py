"""A DNSBL listing of an account's domain suspends it with the evidence; error codes and other accounts don't."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from crm import accounts as account_repo
from crm.domain import AccountStatus, SenderProfile
from guardrails.dnsbl import parse_zones
from sender.dnsbl import DnsblMonitor
from tests.support.dns_server import DnsServer


def _account(engine, name: str, domain: str) -> int:
    with engine.begin() as conn:
        account_id, _ = account_repo.create_account(conn, name, actor="test")
        account_repo.put_sender_profile(conn, account_id, SenderProfile(
            legal_name=name, postal_address="1 rue A, 69001 Lyon", phone="+33 4 00 00 00 00",
            from_email=f"news@{domain}"), actor="test")
    return account_id


def test_listed_account_domain_suspends_once_and_platform_listing_is_reported(make_env):
    env = make_env()
    bad = _account(env.engine, "Spammy", "spammy.example")
    good = _account(env.engine, "Clean", "clean.example")
    odd = _account(env.engine, "Quota", "quota.example")
    with DnsServer() as dns_srv:
        dns_srv.zone.add("spammy.example.dbl.test", "A", "127.0.1.2")
        dns_srv.zone.add("quota.example.dbl.test", "A", "127.255.255.254")  # the DNSBL's error code: not a listing
        dns_srv.zone.add("99.2.0.192.zen.test", "A", "127.0.0.2")  # the platform's own IP

        async def run() -> tuple:
            redis = Redis.from_url(env.settings.redis_url)
            monitor = DnsblMonitor(env.engine, redis, dns_srv.async_resolver(),
                                   parse_zones("zen.test:ip,dbl.test:domain"), ["192.0.2.99", "192.0.2.100"])
            first = await monitor.check_once()
            with env.engine.begin() as conn:  # ops reinstate knowingly: the same listing must not re-suspend
                account_repo.set_status(conn, bad, AccountStatus.ACTIVE, actor="ops")
            await redis.delete(f"envoi:{{a{bad}}}:status")
            second = await monitor.check_once()
            await redis.aclose()
            return first, second

        first, second = asyncio.run(run())
    assert first.suspended == [bad] and second.suspended == []
    assert [(x.target, x.zone, x.answer) for x in first.platform] == [("192.0.2.99", "zen.test", "127.0.0.2")]
    assert set(first.accounts) == {bad}
    with env.engine.connect() as conn:
        suspended = account_repo.get_account(conn, bad)
        assert account_repo.get_account(conn, good).status is AccountStatus.ACTIVE
        assert account_repo.get_account(conn, odd).status is AccountStatus.ACTIVE
    assert suspended.status is AccountStatus.ACTIVE  # reinstated by ops, and not suspended again
    assert first.accounts[bad][0].meaning == "DBL: low-reputation domain (spam)"


def test_suspension_carries_the_blocklist_evidence(make_env):
    env = make_env()
    bad = _account(env.engine, "Spammy", "spammy.example")
    with DnsServer() as dns_srv:
        dns_srv.zone.add("spammy.example.dbl.test", "A", "127.0.1.4")

        async def run() -> None:
            redis = Redis.from_url(env.settings.redis_url)
            await DnsblMonitor(env.engine, redis, dns_srv.async_resolver(), parse_zones("dbl.test:domain"),
                               []).check_once()
            assert await redis.get(f"envoi:{{a{bad}}}:status") == b"suspended"
            await redis.aclose()

        asyncio.run(run())
    with env.engine.connect() as conn:
        account = account_repo.get_account(conn, bad)
    assert account.status is AccountStatus.SUSPENDED and account.suspension_reason == "blocklisted"
    assert account.suspension_evidence["blocklist"] == [
        {"target": "spammy.example", "zone": "dbl.test", "answer": "127.0.1.4", "meaning": "DBL: phishing"}]
