"""The unsubscribe takes effect at once, including for a campaign in flight (issue 5, "Effect").

A campaign of 2,000 recipients is being delivered to a real SMTP server (aiosmtpd) that records when it accepted
each message. While it runs, 120 recipients unsubscribe by RFC 8058 one-click from 8 threads. The guarantee
(docs/architecture.md, "Unsubscribe effect"): no message to a recipient is accepted by the server after that
recipient's unsubscribe request has returned."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import func, select

from crm.schema import messages
from tests.integration.conftest import ok
from tests.integration.unsubscribe_support import campaign_with_tokens, suppressed
from tests.support.stack import wait_until

RECIPIENTS = 2000
VICTIMS = 120
THREADS = 8


class _TimedList(list[Any]):
    """The SMTP server's capture list, stamping each accepted message (appended when DATA is accepted)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def append(self, item: Any) -> None:
        now = time.monotonic()
        with self._lock:
            for rcpt in item.rcpt_tos:
                self.accepted_at.setdefault(rcpt, []).append(now)
            super().append(item)


def test_no_message_is_accepted_after_the_unsubscribe_returned_during_a_campaign_in_flight(make_env):
    env = make_env(ENVOI_BATCH_SIZE="100")
    captured = _TimedList()
    env.smtp.messages = captured
    account_id, client = env.account()
    emails = [f"r{i:05d}@example.com" for i in range(RECIPIENTS)]
    cid, tokens = campaign_with_tokens(env, client, account_id, emails)
    returned_at: dict[str, float] = {}
    started_at: dict[str, float] = {}

    def unsubscribe(address: str) -> None:
        with httpx.Client(timeout=30) as http:
            started_at[address] = time.monotonic()
            r = http.post(f"{env.api.url}/u/{tokens[address]}", content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
            returned_at[address] = time.monotonic()
            assert r.status_code == 200, r.text

    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(captured) >= 150, timeout=60)  # the campaign is in flight
        with captured._lock:
            arrived = set(captured.accepted_at)
        # Victims: spread over the recipients not delivered yet, so some sit in batches already loaded.
        pending = [e for e in emails if e not in arrived]
        step = max(1, len(pending) // VICTIMS)
        victims = pending[::step][:VICTIMS]
        fired = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(unsubscribe, victims))
        burst = time.monotonic() - fired
        view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v,
                          120, message="campaign completed")

    late = {v: [t - returned_at[v] for t in captured.accepted_at.get(v, []) if t > returned_at[v]] for v in victims}
    late = {v: d for v, d in late.items() if d}
    during = [v for v in victims if any(started_at[v] <= t <= returned_at[v] for t in captured.accepted_at.get(v, []))]
    before = [v for v in victims if any(t < started_at[v] for t in captured.accepted_at.get(v, []))]
    delivered_victims = [v for v in victims if v in captured.accepted_at]
    latencies = sorted(returned_at[v] - started_at[v] for v in victims)
    with env.engine.connect() as conn:
        statuses = dict(conn.execute(select(messages.c.status, func.count()).where(messages.c.campaign_id == cid)
                                     .group_by(messages.c.status)).all())
    figures = {
        "recipients": RECIPIENTS, "victims": len(victims), "threads": THREADS, "burst_s": round(burst, 3),
        "accepted_total": len(captured), "victims_delivered": len(delivered_victims),
        "victims_accepted_before_request": len(before), "victims_accepted_while_request_ran": len(during),
        "victims_accepted_after_return": len(late),
        "unsubscribe_latency_ms_p50": round(latencies[len(latencies) // 2] * 1000, 1),
        "unsubscribe_latency_ms_max": round(latencies[-1] * 1000, 1), "ledger": statuses,
    }
    print("\nunsubscribe concurrency figures:", figures)
    assert late == {}, f"messages accepted after the unsubscribe returned: {late}"
    assert len(victims) == VICTIMS and all(len(suppressed(env, account_id, v)) == 1 for v in victims[:5])
    # Everyone else got exactly one message; each victim at most one (sent before or while it unsubscribed).
    others = set(emails) - set(victims)
    assert all(len(captured.accepted_at.get(e, [])) == 1 for e in others)
    assert all(len(captured.accepted_at.get(v, [])) <= 1 for v in victims)
    assert statuses.get("suppressed", 0) == VICTIMS - len(delivered_victims)
    assert view["counters"]["sent"] == len(captured)
