"""Issue 3: signed webhooks to the CRM (retries with backoff, give-up, SSRF refusal) and the admin API."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update

from crm.schema import campaigns, messages, webhook_events
from crm.webhooks import enqueue
from sender import accounts_service
from sender.webhook_delivery import SIGNATURE_HEADER, WebhookConfig, WebhookDelivery, verify, webhook_secret
from tests.integration.conftest import ok, setup_campaign
from tests.support.stack import wait_until

ADMIN = {"Authorization": "Bearer admin-test-key"}


class Receiver:
    """A CRM webhook endpoint on 127.0.0.1: answers the scripted statuses in turn, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k: v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/envoi"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _admin(env, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{env.api.url}/admin/v1{path}", headers=ADMIN, timeout=30, **kw)


def test_webhook_url_on_a_private_range_is_refused_unless_allowed(make_env):
    env = make_env()  # ENVOI_WEBHOOK_ALLOW_PRIVATE unset: refused
    _, client = env.account()
    for url in ("http://127.0.0.1:9/hook", "https://10.1.2.3/hook", "https://169.254.169.254/latest",
                "https://[::1]/hook", "ftp://example.com/x"):
        r = client.put("/v1/account/webhook", json={"url": url})
        assert r.status_code == 422 and r.json()["field"] == "url", (url, r.text)
    assert ok(client.get("/v1/account/webhook"))["url"] is None


def test_webhook_is_signed_retried_with_backoff_and_given_up_after_the_maximum_age(make_env):
    env = make_env(ENVOI_WEBHOOK_ALLOW_PRIVATE="true")
    account_id, client = env.account()
    with Receiver([500, 503]) as receiver:
        view = ok(client.put("/v1/account/webhook", json={"url": receiver.url}))
        secret = view["secret"]
        assert secret == webhook_secret(env.settings.signing_keys[0], account_id)
        with env.engine.begin() as conn:
            first = enqueue(conn, account_id, "account.suspended", {"reason": "failure_rate"})
        clock = Clock()
        delivery = WebhookDelivery(env.engine, WebhookConfig(
            env.settings.signing_keys[0], allow_private=True, retry_base_s=10, retry_cap_s=60, max_age_s=600),
            clock=clock)
        assert asyncio.run(delivery.run_once()) == 0  # 500
        assert asyncio.run(delivery.run_once()) == 0  # not due yet: nothing posted
        assert len(receiver.requests) == 1
        clock.now += timedelta(seconds=10)  # first backoff: 10 s
        assert asyncio.run(delivery.run_once()) == 0  # 503
        clock.now += timedelta(seconds=19)
        assert asyncio.run(delivery.run_once()) == 0 and len(receiver.requests) == 2  # second backoff: 20 s
        clock.now += timedelta(seconds=1)
        assert asyncio.run(delivery.run_once()) == 1
        assert len(receiver.requests) == 3
        headers, body = receiver.requests[-1]
        assert verify(headers[SIGNATURE_HEADER], body, secret)
        assert not verify(headers[SIGNATURE_HEADER], body + b" ", secret)
        assert not verify(headers[SIGNATURE_HEADER], body, secret, now=int(headers[SIGNATURE_HEADER][2:12]) + 3600)
        event = json.loads(body)
        assert event["id"] == first and event["type"] == "account.suspended"
        assert event["data"] == {"reason": "failure_rate"} and event["account_id"] == account_id
        # An endpoint that keeps failing: retried until the event is older than the maximum age, then failed.
        receiver.statuses = [500] * 100
        with env.engine.begin() as conn:
            second = enqueue(conn, account_id, "address.disabled", {"address": "x@example.com"})
        for _ in range(20):
            asyncio.run(delivery.run_once())
            clock.now += timedelta(seconds=61)
        with env.engine.connect() as conn:
            row = conn.execute(select(webhook_events).where(webhook_events.c.id == second)).one()
        assert row.failed_at is not None and row.delivered_at is None and "HTTP 500" in row.last_error
        assert 1 < row.attempts < 20


def test_admin_suspend_holds_then_cancel_and_show_the_audit_trail(make_env):
    env = make_env()
    account_id, client = env.account()
    assert httpx.get(f"{env.api.url}/admin/v1/accounts/{account_id}").status_code == 401
    assert client.get(f"/admin/v1/accounts/{account_id}").status_code == 403  # an account key is not the admin key
    assert _admin(env, "POST", f"/accounts/{account_id}/reinstate", json={"note": "x"}).status_code == 409
    r = _admin(env, "POST", f"/accounts/{account_id}/suspend", json={"note": "spam complaint", "reason": "illegal_use"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert client.post("/v1/messages/email", json={"to": "a@example.com", "subject": "S", "text": "t"}
                       ).status_code == 403
    # A campaign queued while suspended (sent before, here forced through SQL): held by the worker, not sent.
    cid = setup_campaign(client, [f"h{i}@example.com" for i in range(5)])
    with env.engine.begin() as conn:
        conn.execute(update(campaigns).values(status="sending"))
    with env.worker():
        wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["counters"]["held"] == 5, 20, message="held")
    assert env.smtp.messages == []
    assert _admin(env, "POST", f"/accounts/{account_id}/reinstate", json={"note": " "}).status_code == 422
    r = _admin(env, "POST", f"/accounts/{account_id}/held/cancel", json={"note": "customer asked"})
    assert r.json()["cancelled_messages"] == 5
    with env.engine.connect() as conn:
        assert {s for (s,) in conn.execute(select(messages.c.status))} == {"cancelled"}
    shown = _admin(env, "GET", f"/accounts/{account_id}").json()
    assert shown["status"] == "suspended" and shown["suspension_reason"] == "illegal_use"
    actions = [a["action"] for a in shown["audit"]]
    assert actions.index("account.suspended") < actions.index("account.held_cancelled")
    suspended = next(a for a in shown["audit"] if a["action"] == "account.suspended")
    assert suspended["data"]["note"] == "spam complaint" and suspended["data"]["reason"] == "illegal_use"
    assert shown["guardrails"]["failures_to_disable"] == "3"
    r = _admin(env, "POST", f"/accounts/{account_id}/reinstate", json={"note": "cleared", "actor": "bob"})
    assert r.status_code == 200 and r.json()["released_messages"] == 0
    r = _admin(env, "POST", f"/accounts/{account_id}/terminate", json={"note": "contract ended"})
    assert r.json()["status"] == "terminated"
    assert _admin(env, "POST", f"/accounts/{account_id}/suspend", json={"note": "x"}).status_code == 409


@pytest.mark.parametrize("days, suspended", [(15, False), (16, True)])
def test_an_account_overdue_for_more_than_15_days_is_suspended(make_env, days, suspended):
    env = make_env()
    account_id, client = env.account()
    today = date(2026, 11, 26)
    r = _admin(env, "PUT", f"/accounts/{account_id}/billing",
               json={"state": "overdue", "overdue_since": (today - timedelta(days=days)).isoformat()})
    assert r.status_code == 200, r.text

    async def chore() -> list[int]:
        redis = Redis.from_url(env.settings.redis_url)
        try:
            now = datetime(2026, 11, 26, 12, tzinfo=UTC)
            return await accounts_service.suspend_overdue(env.engine, redis, now)
        finally:
            await redis.aclose()

    assert asyncio.run(chore()) == ([account_id] if suspended else [])
    view = ok(client.get("/v1/account"))
    assert view["status"] == ("suspended" if suspended else "active")
    if suspended:
        assert view["suspension_reason"] == "non_payment"
        assert view["suspension_evidence"]["overdue_days"] == 16


def test_cli_suspends_shows_and_reinstates_through_the_same_services(make_env):
    from click.testing import CliRunner

    from envoi.cli import main
    from tests.support.stack import settings_env

    env = make_env()
    account_id, client = env.account()
    runner = CliRunner(env=settings_env(env.settings))
    r = runner.invoke(main, ["accounts", "suspend", str(account_id), "--note", "abuse report #12"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["status"] == "suspended"
    assert ok(client.get("/v1/account"))["status"] == "suspended"
    r = runner.invoke(main, ["accounts", "reinstate", str(account_id), "--note", ""])
    assert r.exit_code != 0 and "note" in r.output
    r = runner.invoke(main, ["accounts", "reinstate", str(account_id), "--note", "checked", "--actor", "carol"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["accounts", "show", str(account_id)])
    shown = json.loads(r.output[r.output.index("{"):])
    assert shown["status"] == "active"
    assert [a["actor"] for a in shown["audit"] if a["action"] == "account.reinstated"] == ["carol"]
