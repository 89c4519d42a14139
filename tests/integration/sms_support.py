"""Shared helpers of the SMS tests and bench (issue 6): an in-thread worker whose SMS road sends through the
official Twilio SDK to the local Twilio-shaped server, on a controllable clock; an SMS campaign set up over
the API; Twilio-signed webhook posts."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from envoi.settings import Settings
from sender.twilio_transport import TwilioSettings, TwilioSmsTransport
from tests.support.stack import ThreadWorker
from tests.support.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioTestServer, sign_twilio_request

SMS_FROM = "+33757000001"
SMS_SETTINGS = {"from": SMS_FROM, "sender_name": "Boutique Test", "opt_out_mention": "STOP au 36180"}


class Clock:
    """The SMS road's clock, moved by the test (quiet hours)."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self._lock = threading.Lock()

    def set(self, at: datetime) -> None:
        with self._lock:
            self.at = at

    def __call__(self) -> datetime:
        with self._lock:
            return self.at.astimezone(UTC)


class SmsThreadWorker(ThreadWorker):
    """`envoi.worker.Worker` in a thread, its SMS road aimed at `server` through the SDK's `http_client=`."""

    def __init__(self, settings: Settings, engine: Engine, server: TwilioTestServer, clock: Clock | None = None,
                 rate_per_sender: float = 1000.0) -> None:
        super().__init__(settings, engine)
        self.server, self.clock, self.rate = server, clock, rate_per_sender

    def customize(self, hooks: Any, redis: Any) -> None:
        from envoi.composition import sms_road

        transport = TwilioSmsTransport(TwilioSettings(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, rate_per_sender=self.rate),
                                       http_client=self.server.http_client())
        road = sms_road(self.settings, self.engine, transport, self.clock, redis=redis)
        road.rate_for = lambda _key: self.rate  # the road shapes at the transport's pace
        hooks.sms = road  # the worker closes it on the way out

    def move_due(self, ahead_s: float) -> int:
        """Move retries due within `ahead_s` seconds of now back to their streams (the clock jumped ahead)."""
        import time

        fut = asyncio.run_coroutine_threadsafe(self.worker.queue.move_due(now=time.time() + ahead_s), self.loop)
        return int(fut.result(10))

    def retry_depth(self) -> int:
        fut = asyncio.run_coroutine_threadsafe(self.worker.queue.depth(), self.loop)
        return int(fut.result(10)["retry"])


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 400, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def setup_sms_campaign(client: httpx.Client, mobiles: list[str], *, text: str, sender: dict[str, str],
                       consent: list[bool] | None = None, kind: str = "marketing") -> tuple[int, dict[str, Any]]:
    """Sender profile + SMS settings + contacts with SMS consent + list + template + campaign (channel sms)."""
    ok(client.put("/v1/account/sender-profile", json=sender))
    ok(client.put("/v1/account/sms-settings", json=SMS_SETTINGS))
    lst = ok(client.post("/v1/lists", json={"name": f"SMS {uuid.uuid4().hex[:8]}"}))
    lines = []
    for i, mobile in enumerate(mobiles):
        c: dict[str, Any] = {"mobile": mobile, "crm_id": f"sms-{i}-{mobile}", "first_name": f"Ana{i}"}
        if consent is None or consent[i]:
            c["consents"] = [{"channel": "sms", "source": "form v1", "wording": "J'accepte les SMS"}]
        lines.append(json.dumps(c))
    report = ok(client.post(f"/v1/contacts/import?list_id={lst['id']}", content="\n".join(lines).encode(),
                            headers={"Content-Type": "application/x-ndjson"}))
    assert report["error_count"] == 0, report
    tpl = ok(client.post("/v1/templates", json={"name": "S", "subject": "SMS", "text": text}))
    camp = ok(client.post("/v1/campaigns", json={"name": "C", "list_id": lst["id"], "template_id": tpl["id"],
                                                 "channel": "sms", "kind": kind}))
    return int(camp["id"]), camp


def post_signed(api_url: str, public_url: str, path: str, params: dict[str, str],
                token: str = TEST_AUTH_TOKEN) -> httpx.Response:
    """POST a webhook as Twilio does: form body, signature over the public URL + sorted params."""
    signature = sign_twilio_request(token, public_url + path, params)
    return httpx.post(api_url + path, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
