"""Delivery of the webhook outbox (`crm.webhooks`, table `webhook_events`) to each account's CRM URL.

Wire format (documented in README, "Webhooks"): `POST <webhook_url>` with a JSON body
`{"id", "type", "created_at", "account_id", "data"}` and the headers
    Envoi-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
    Envoi-Event-Id: <id>        Envoi-Event-Type: <type>
The timestamp is inside the MAC so that a captured request cannot be replayed later (receivers reject a `t`
older than a few minutes); the secret is per account (`webhook_secret`), shown by `PUT /v1/account/webhook`.

At-least-once: an event is claimed (compare-and-set on `attempts`, so two workers do not post it at once),
posted, and marked delivered on a 2xx; otherwise retried with exponential backoff (base · 2^(n-1), capped)
until it is older than the maximum age, then marked failed. Receivers dedupe on `id`.

SSRF: URLs resolving to loopback, private, link-local, multicast or reserved ranges are refused, when set and
again at delivery (DNS may change), unless the platform allows them (`ENVOI_WEBHOOK_ALLOW_PRIVATE`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from crm.db import as_utc
from crm.schema import accounts, webhook_events

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Envoi-Signature"
LEASE = timedelta(seconds=60)  # a claimed event is not claimed again for this long (crash safety)


def webhook_secret(signing_key: str, account_id: int) -> str:
    """The account's webhook secret, derived from the platform's newest signing key (no secret stored)."""
    return hmac.new(signing_key.encode(), f"envoi-webhook:{account_id}".encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(header: str, body: bytes, secret: str, tolerance_s: float = 300, now: float | None = None) -> bool:
    """What a receiver does: check the MAC (constant time) and the timestamp's freshness."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, ts, body).split("v1=", 1)[1]
    fresh = abs((time.time() if now is None else now) - ts) <= tolerance_s
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


class UrlRefused(ValueError):
    pass


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global)


def check_url(url: str, allow_private: bool) -> str:
    """The URL if it may receive webhooks; raises UrlRefused saying why. Blocking (DNS): call from a thread."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UrlRefused("must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise UrlRefused("must not carry credentials")
    if allow_private:
        return url
    if parts.scheme != "https":
        raise UrlRefused("must use https")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UrlRefused(f"host {parts.hostname} does not resolve ({exc.strerror})") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if _forbidden(ip):
            raise UrlRefused(f"host {parts.hostname} resolves to {ip}, a loopback, private or reserved address")
    return url


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    signing_key: str
    allow_private: bool = False
    timeout_s: float = 10.0
    retry_base_s: float = 10.0
    retry_cap_s: float = 3600.0
    max_age_s: float = 3 * 24 * 3600.0
    batch: int = 50


def backoff_s(attempts: int, base: float, cap: float) -> float:
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


class WebhookDelivery:
    """The delivery chore: `run_once()` posts every due event once; the worker calls it periodically."""

    def __init__(self, engine: Engine, config: WebhookConfig, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.config = config
        self.client = client
        self.clock = clock

    async def run_once(self) -> int:
        """Deliver due events; returns how many were delivered."""
        now = self.clock()
        due = await asyncio.to_thread(self._due, now)
        if not due:
            return 0
        client = self.client or httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=False)
        delivered = 0
        try:
            for ev in due:
                if not await asyncio.to_thread(self._claim, ev, now):
                    continue  # another worker took it
                error = await self._post(client, ev)
                await asyncio.to_thread(self._settle, ev, error, self.clock())
                delivered += error is None
        finally:
            if self.client is None:
                await client.aclose()
        return delivered

    def _due(self, now: datetime) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(webhook_events, accounts.c.webhook_url)
                .select_from(webhook_events.join(accounts, accounts.c.id == webhook_events.c.account_id))
                .where(webhook_events.c.delivered_at.is_(None), webhook_events.c.failed_at.is_(None),
                       webhook_events.c.next_attempt_at <= now)
                .order_by(webhook_events.c.id).limit(self.config.batch))
            return [dict(r._mapping) for r in rows]

    def _claim(self, ev: dict[str, Any], now: datetime) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(
                update(webhook_events).where(webhook_events.c.id == ev["id"],
                                             webhook_events.c.attempts == ev["attempts"],
                                             webhook_events.c.delivered_at.is_(None))
                .values(attempts=ev["attempts"] + 1, next_attempt_at=now + LEASE)).rowcount)

    async def _post(self, client: httpx.AsyncClient, ev: dict[str, Any]) -> str | None:
        url = ev["webhook_url"]
        if not url:
            return "no webhook_url configured for the account"
        try:
            await asyncio.to_thread(check_url, url, self.config.allow_private)
        except UrlRefused as exc:
            return f"webhook_url refused: {exc}"
        created = as_utc(ev["created_at"])
        body = json.dumps({"id": ev["id"], "type": ev["event_type"],
                           "created_at": created.isoformat() if created else None,
                           "account_id": ev["account_id"], "data": ev["payload"]},
                          separators=(",", ":"), default=str).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json", "User-Agent": "Envoi-Webhooks/1",
            SIGNATURE_HEADER: signature(webhook_secret(self.config.signing_key, ev["account_id"]), ts, body),
            "Envoi-Event-Id": str(ev["id"]), "Envoi-Event-Type": ev["event_type"],
        }
        try:
            resp = await client.post(url, content=body, headers=headers, timeout=self.config.timeout_s)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:1000]
        if 200 <= resp.status_code < 300:
            return None
        return f"HTTP {resp.status_code}"

    def _settle(self, ev: dict[str, Any], error: str | None, now: datetime) -> None:
        attempts = int(ev["attempts"]) + 1
        values: dict[str, Any]
        if error is None:
            values = {"delivered_at": now, "last_error": None}
        else:
            nxt = now + timedelta(seconds=backoff_s(attempts, self.config.retry_base_s, self.config.retry_cap_s))
            created = as_utc(ev["created_at"]) or now
            values = {"last_error": error[:1000], "next_attempt_at": nxt}
            if (nxt - created).total_seconds() > self.config.max_age_s:
                values["failed_at"] = now  # give up: the event would be older than the maximum age
                log.warning("webhook event %s given up after %d attempts: %s", ev["id"], attempts, error)
        with self.engine.begin() as conn:
            conn.execute(update(webhook_events).where(webhook_events.c.id == ev["id"]).values(**values))
