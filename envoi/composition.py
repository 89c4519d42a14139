"""The composition root: the one place that builds settings, engines, pools, transports and services."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime  # issue 6
from typing import (
    TYPE_CHECKING,  # issue 3
    Any,  # issue 6
)

from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from crm.address_hash import AddressHasher  # issue 5
from crm.db import make_engine, migrate
from envoi.http.deps import Services
from envoi.settings import Settings
from sender.hooks import BodyFilter, HandoffGuard, MessageSigner, OutcomeSink
from sender.links import Links
from sender.queue import DispatchQueue
from sender.sms_config import SmsPlatform  # issue 6
from sender.sms_dispatch import SmsRoad  # issue 6

if TYPE_CHECKING:
    from sender.dnsbl import DnsblMonitor
from sender.sms_transport import SmsTransport  # issue 6
from unsubscribe.fence import SuppressionFence  # issue 5
from unsubscribe.service import UnsubscribeService  # issue 5
from unsubscribe.tokens import LinkSigner, key_set  # issue 5

if TYPE_CHECKING:  # issue 3
    from fastapi import APIRouter  # issue 5

    from guardrails.signals import CampaignSignals
    from sender.guardrail_policy import PolicyCache
    from sender.thresholds_monitor import ThresholdMonitor
    from sender.webhook_delivery import WebhookDelivery
    from tracking.inbound import InboundRouter  # issue 5


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"unix://{settings.redis_socket}"


def make_redis(settings: Settings) -> Redis:
    # Every network call has a timeout; health_check_interval reconnects after a Redis restart.
    return Redis.from_url(redis_url(settings), socket_timeout=10, socket_connect_timeout=5,
                          health_check_interval=5, retry_on_timeout=True)


def database(settings: Settings, run_migrations: bool = True) -> Engine:
    engine = make_engine(settings.effective_database_url)
    if run_migrations:
        migrate(engine)
    return engine


def links(settings: Settings) -> Links:
    return Links(settings.signing_keys, settings.public_url, settings.bounce_domain, settings.unsubscribe_mailbox)


def api_services(settings: Settings, engine: Engine | None = None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def factory() -> AsyncIterator[Services]:
        eng = engine or database(settings, run_migrations=False)
        redis = make_redis(settings)
        queue = DispatchQueue(redis, settings.partitions, f"api-{socket.gethostname()}")
        try:
            yield Services(settings, eng, redis, queue, links(settings))
        finally:
            await redis.aclose()
            if engine is None:
                eng.dispose()

    return factory


@dataclass
class DispatchHooks:
    """What plugs into every worker: last-moment guards, outcome sinks, HTML filters, periodic chores."""

    guards: list[HandoffGuard] = field(default_factory=list)
    sinks: list[OutcomeSink] = field(default_factory=list)
    body_filters: list[BodyFilter] = field(default_factory=list)
    signers: list[MessageSigner] = field(default_factory=list)
    chores: list[tuple[float, Callable[[], Awaitable[None]]]] = field(default_factory=list)  # (period s, job)
    sms: SmsRoad | None = None  # the SMS road (render, quiet hours, Twilio) for messages of channel sms


def dispatch_hooks(settings: Settings, engine: Engine, redis: Redis) -> DispatchHooks:
    """The one place where the guardrails, tracking and unsubscribe slices are wired into the dispatcher."""
    hooks = DispatchHooks()
    _delivery_hooks(hooks, settings, engine)  # issue 7
    hooks.sms = sms_road(settings, engine, redis=redis)  # issue 6: SMS take their own road
    unsubscribe_hooks(hooks, settings, engine, redis)  # issue 5: hand-off fence (correct at any position)
    _guardrail_hooks(hooks, settings, engine, redis)  # issue 3
    _tracking_hooks(hooks, settings, engine, redis)  # issue 4
    _shaping_hooks(hooks, settings)  # issue 7: the last guard (a suppression verdict wins over a deferral)
    return hooks


def _delivery_hooks(hooks: DispatchHooks, settings: Settings, engine: Engine) -> None:
    """Issue 7: DKIM signing with each From domain's key. It must stay the LAST signer: any change to the bytes
    after it breaks the signature."""
    from sender.dkim_keys import PlatformKeyring
    from sender.dkim_road import DomainDkimSigner

    if settings.dkim_sign:
        hooks.signers.append(DomainDkimSigner(engine, PlatformKeyring.parse(settings.dkim_platform_keys)))


def _shaping_hooks(hooks: DispatchHooks, settings: Settings) -> None:
    """Issue 7, direct mode: the per-destination shaping guard defers, without counting an attempt, what a
    suspended or rate-limited destination cannot take now."""
    if settings.delivery_mode == "direct":
        from envoi.delivery import shaping_guard

        hooks.guards.append(shaping_guard(settings))


# --- issue 6 (SMS through Twilio) --------------------------------------------------------------------------------
def sms_transport(settings: Settings) -> SmsTransport:
    """Twilio when TWILIO_ACCOUNT_SID is set; otherwise the capture file var/sms-outbox.ndjson (make run)."""
    if not settings.twilio_account_sid:
        from sender.sms_capture import SmsCaptureTransport

        return SmsCaptureTransport(settings.var_dir / "sms-outbox.ndjson")
    from sender.twilio_transport import TwilioSettings, TwilioSmsTransport

    return TwilioSmsTransport(TwilioSettings(
        account_sid=settings.twilio_account_sid, auth_token=settings.twilio_auth_token,
        rate_per_sender=settings.sms_rate_per_sender, max_in_flight=settings.sms_max_in_flight,
        timeout=settings.sms_timeout_s,
    ))


def sms_platform(settings: Settings) -> SmsPlatform:
    return SmsPlatform(max_segments=settings.sms_max_segments, opt_out_mention=settings.sms_opt_out_mention)


def sms_status_callback(settings: Settings) -> str:
    """Where Twilio posts delivery statuses: under the public URL, so signatures match behind a reverse proxy."""
    return settings.sms_status_callback_url or f"{settings.public_url}/twilio/status?m={{message_id}}"


def sms_tokens(redis: Redis) -> Callable[[str, int, float], Awaitable[int]]:
    """The SMS road's shared token bucket per sender (issue 6 x 7): `sender.shaper`, destination `sms:<sender>`."""
    from sender.shaper import Shaper
    from sender.shaping import ShapingPolicy

    shaper = Shaper(redis)

    async def take(sender: str, want: int, rate: float) -> int:
        granted, _ = await shaper.take_tokens(f"sms:{sender}", want, ShapingPolicy(rate_per_s=rate))
        return granted

    return take


def sms_road(settings: Settings, engine: Engine, transport: SmsTransport | None = None,
             clock: Callable[[], datetime] | None = None, *, redis: Redis | None = None) -> SmsRoad:
    """The dispatcher's SMS road; tests pass a transport aimed at a local Twilio-shaped server and a clock. With
    `redis`, the rate per sender holds across every worker process (a shared token bucket)."""
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    shaped = transport is not None or bool(settings.twilio_account_sid)  # the capture file needs no shaping
    return SmsRoad(engine, transport or sms_transport(settings), sms_platform(settings),
                   status_callback=sms_status_callback(settings),
                   rate_for=(lambda _key: settings.sms_rate_per_sender) if shaped else None,
                   # 4 dispatch loops share the sender's pace: keep a batch well under the reclaim idle time.
                   send_budget_s=settings.reclaim_idle_s / 8,
                   tokens=sms_tokens(redis) if redis is not None and shaped else None, **extra)


def twilio_router(settings: Settings, engine: Engine, redis: Redis) -> APIRouter:
    """Twilio's webhooks with the guardrails behind them: each first final status feeds the 3-failure rule of
    SMS numbers (in the webhook's transaction; `delivered` resets), a late failure the mailing's failure-rate
    counters (judged at once), and an opt-out (STOP keyword, 21610) is published to the unsubscribe fence before
    Twilio gets its answer."""
    import logging

    from crm.domain import Channel, MessageStatus
    from sender.address_failures import AddressOutcome, apply_outcomes
    from sender.guardrail_policy import policy_for
    from tracking.twilio_webhooks import build_twilio_router

    monitor = threshold_monitor(settings, engine, redis)
    monitor.policy_of = guardrail_policies(settings, engine).get
    fence = SuppressionFence(redis, wait_s=settings.unsubscribe_fence_s)

    def on_status(conn: Any, m: dict[str, Any], state: str, code: int | None) -> None:
        delivered = state == "delivered"
        outcome = AddressOutcome(int(m["account_id"]), str(m["recipient"]), delivered, None if delivered else code,
                                 None, f"twilio {state}", False, int(m["id"]), m["campaign_id"], Channel.SMS)
        apply_outcomes(conn, [outcome], lambda aid: policy_for(conn, aid, settings.guardrail_overrides))

    async def after_failure(m: dict[str, Any], code: int | None) -> None:
        await monitor.record_async_failure(int(m["account_id"]), m["campaign_id"], code,
                                           was_delivered=m["status"] == MessageStatus.SENT.value)

    async def on_opt_out(account_id: int, number: str) -> None:
        if not await fence.publish(account_id, Channel.SMS.value, number):
            logging.getLogger(__name__).warning(
                "sms opt-out of account %s: a hand-off to the number outlived the %.1fs fence wait",
                account_id, fence.wait_s)

    return build_twilio_router(engine, settings.twilio_auth_token, settings.public_url, on_status=on_status,
                               after_failure=after_failure, on_opt_out=on_opt_out)


# --- issue 3 (guardrails effects: 3-failure rule, thresholds, suspension, webhooks) ------------------------------
def campaign_signals(settings: Settings, engine: Engine, redis: Redis) -> CampaignSignals:
    """Complaints and opens for the thresholds: the tracking slice (issue 4) returns its implementation here."""
    from envoi.tracking_wiring import TrackingSignals

    return TrackingSignals(engine, redis)


def guardrail_policies(settings: Settings, engine: Engine) -> PolicyCache:
    from sender.guardrail_policy import PolicyCache

    return PolicyCache(engine, settings.guardrail_overrides)


def threshold_monitor(settings: Settings, engine: Engine, redis: Redis,
                      clock: Callable[[], datetime] | None = None) -> ThresholdMonitor:
    from sender.thresholds_monitor import ThresholdMonitor

    extra = {"clock": clock} if clock is not None else {}
    return ThresholdMonitor(engine, redis, guardrail_policies(settings, engine).get,
                            campaign_signals(settings, engine, redis), **extra)


def webhook_delivery(settings: Settings, engine: Engine) -> WebhookDelivery:
    from sender.webhook_delivery import WebhookConfig, WebhookDelivery

    return WebhookDelivery(engine, WebhookConfig(
        signing_key=settings.signing_keys[0], allow_private=settings.webhook_allow_private,
        timeout_s=settings.webhook_timeout_s, retry_base_s=settings.webhook_retry_base_s,
        retry_cap_s=settings.webhook_retry_cap_s, max_age_s=settings.webhook_max_age_s))


def _guardrail_hooks(hooks: DispatchHooks, settings: Settings, engine: Engine, redis: Redis) -> None:
    from sender import accounts_service
    from sender.accounts_service import AccountStatusGuard
    from sender.address_failures import AddressFailureSink

    policies = guardrail_policies(settings, engine)
    monitor = threshold_monitor(settings, engine, redis)
    monitor.policy_of = policies.get
    queue = DispatchQueue(redis, settings.partitions, f"guardrails-{socket.gethostname()}")
    delivery = webhook_delivery(settings, engine)
    # First: a suspended account's messages are held whatever the other guards would say of them.
    hooks.guards.insert(0, AccountStatusGuard(redis))
    hooks.sinks[:0] = [monitor, AddressFailureSink(engine, policies.get)]

    async def sync_flags() -> None:
        await accounts_service.sync_flags(engine, redis)

    async def release_stray_held() -> None:
        await accounts_service.release_stray_held(engine, redis, queue)

    async def suspend_overdue() -> None:
        from crm.db import utcnow

        await accounts_service.suspend_overdue(engine, redis, utcnow(), policies.get)

    async def deliver_webhooks() -> None:
        await delivery.run_once()

    async def scan_thresholds() -> None:
        await monitor.scan()

    hooks.chores += [(5.0, sync_flags), (5.0, release_stray_held), (settings.threshold_scan_s, scan_thresholds),
                     (60.0, suspend_overdue), (1.0, deliver_webhooks)]
    if settings.dnsbl_zones:
        monitor_dnsbl = dnsbl_monitor(settings, engine, redis)

        async def check_dnsbl() -> None:
            from envoi.metrics import DNSBL_LISTED

            report = await monitor_dnsbl.check_once()
            DNSBL_LISTED.clear()
            for listing in report.platform + [x for xs in report.accounts.values() for x in xs]:
                DNSBL_LISTED.labels(listing.target, listing.zone).set(1)

        hooks.chores.append((settings.dnsbl_interval_s, check_dnsbl))


def dnsbl_monitor(settings: Settings, engine: Engine, redis: Redis) -> DnsblMonitor:
    from sender.dns_resolvers import async_resolver
    from sender.dnsbl import DnsblMonitor

    return DnsblMonitor(engine, redis, async_resolver(settings.dns_nameservers, settings.dns_timeout_s),
                        settings.dnsbl_zones, settings.dnsbl_platform_targets)


# --- issue 5 (unsubscribe, consent and data-subject rights) ------------------------------------------------------
def link_signer(settings: Settings) -> LinkSigner:
    """Verifies unsubscribe tokens: retired keys keep verifying for ENVOI_SIGNING_KEY_VERIFY_DAYS."""
    from datetime import timedelta

    return LinkSigner(key_set(settings.signing_keys, settings.signing_keys_retired_at),
                      verify_for=timedelta(days=settings.signing_key_verify_days))


def address_hasher(settings: Settings) -> AddressHasher:
    return AddressHasher(settings.erasure_key)


def unsubscribe_service(settings: Settings, engine: Engine, redis: Redis) -> UnsubscribeService:
    return UnsubscribeService(engine, SuppressionFence(redis, wait_s=settings.unsubscribe_fence_s))


def unsubscribe_router(settings: Settings, svc: Services) -> APIRouter:
    """The /u/ page, RFC 8058 one-click and undo (mounted by envoi.app at start-up)."""
    from unsubscribe.web import build_router

    return build_router(svc.engine, link_signer(settings), unsubscribe_service(settings, svc.engine, svc.redis))


def register_unsubscribe_mailto(router: InboundRouter, settings: Settings, engine: Engine, redis: Redis) -> None:
    """`unsubscribe+<token>@<mailbox domain>` on the inbound SMTP listener (RFC 2369 mailto)."""
    from unsubscribe.mailto import mailto_handler, matches

    router.register(matches(settings.unsubscribe_mailbox),
                    mailto_handler(settings.unsubscribe_mailbox, link_signer(settings),
                                   unsubscribe_service(settings, engine, redis)), name="unsubscribe_mailto")


def unsubscribe_hooks(hooks: DispatchHooks, settings: Settings, engine: Engine, redis: Redis,
                      clock: Callable[[], datetime] | None = None) -> None:
    """The hand-off fence (guard + in-flight release) and the retention purge chore."""
    from envoi.retention import retention_chore
    from sender.unsubscribe_guard import InflightRelease, UnsubscribeGuard

    fence = SuppressionFence(redis, wait_s=settings.unsubscribe_fence_s)
    hooks.guards.append(UnsubscribeGuard(fence, engine, address_hasher(settings)))
    hooks.sinks.append(InflightRelease(fence))
    hooks.chores.append((settings.retention_purge_period_s,
                         retention_chore(engine, clock) if clock else retention_chore(engine)))


# --- issue 4 (feedback and tracking) ------------------------------------------------------------------------------
def _tracking_hooks(hooks: DispatchHooks, settings: Settings, engine: Engine, redis: Redis) -> None:
    """Link rewriting + open pixel at render time; per-campaign, per-domain counters of every outcome."""
    from envoi.tracking_wiring import body_filter, engagement_consumer, outcome_sink

    hooks.body_filters.append(body_filter(settings, engine))
    hooks.sinks.append(outcome_sink(redis))
    consumer = engagement_consumer(settings, engine, redis)

    async def record_engagement() -> None:  # opens and clicks buffered by the API processes → SQL + counters
        await consumer.run_once()

    hooks.chores.append((0.2, record_engagement))


def inbound_router(settings: Settings, engine: Engine, redis: Redis) -> InboundRouter:
    """The inbound SMTP listener's router: ARF at the feedback mailbox, the slices' own mailboxes (issue 5's
    mailto unsubscribe), then DSNs at any VERP address of the bounce domain (first match wins)."""
    from envoi.tracking_wiring import inbound_router as build

    return build(settings, engine, redis,
                 lambda router: register_unsubscribe_mailto(router, settings, engine, redis))
