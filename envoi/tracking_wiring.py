"""Issue 4 wiring (part of the composition root): the feedback recorder with the 3-failure rule behind it, the
inbound SMTP router, the HTTP tracking service, the dispatcher hooks, and the guardrails' signals adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy.engine import Connection, Engine

from envoi.settings import Settings
from tracking.body_filter import TrackingBodyFilter
from tracking.engagement import EngagementConsumer
from tracking.feedback import FailureFeed, FeedbackRecorder, FinalFailure
from tracking.inbound import InboundRouter, domain_is, mailbox_is, report_handler
from tracking.machine import MachineRules
from tracking.mx_providers import MxProviders
from tracking.signals import campaign_signals, transactional_signals
from tracking.sink import DomainCounterSink
from tracking.sns import SnsVerifier
from tracking.web import Tracking


def machine_rules(settings: Settings) -> MachineRules:
    return MachineRules.with_networks(settings.tracking_machine_networks, settings.tracking_fast_seconds)


def failure_feed(settings: Settings) -> FailureFeed:
    """Asynchronous hard/soft bounces → the guardrails slice's 3-failure rule, in the recording transaction."""
    from sender.address_failures import AddressOutcome, apply_outcomes
    from sender.guardrail_policy import policy_for

    def feed(conn: Connection, failures: Sequence[FinalFailure]) -> None:
        outcomes = [AddressOutcome(f.account_id, f.address, False, f.code, f.enhanced, f.text, False,
                                   f.message_id, f.campaign_id) for f in failures]
        policies = {f.account_id: policy_for(conn, f.account_id, settings.guardrail_overrides) for f in failures}
        apply_outcomes(conn, outcomes, policies.__getitem__)

    return feed


def feedback_recorder(settings: Settings, engine: Engine, redis: Redis | None) -> FeedbackRecorder:
    return FeedbackRecorder(engine, redis, settings.signing_keys, settings.bounce_domain, failure_feed(settings))


def inbound_router(settings: Settings, engine: Engine, redis: Redis | None,
                   register_more: Callable[[InboundRouter], None] | None = None) -> InboundRouter:
    """The inbound SMTP router; `register_more` lets other slices `register(predicate, handler)` on it.

    Order matters (first match wins): exact mailboxes before the catch-all bounce domain."""
    recorder = feedback_recorder(settings, engine, redis)
    router = InboundRouter()
    router.register(mailbox_is(settings.feedback_mailbox), report_handler(recorder, "arf"), "feedback-loop")
    if register_more is not None:
        register_more(router)
    router.register(domain_is(settings.bounce_domain), report_handler(recorder, "dsn"), "bounces")
    return router


def tracking_service(settings: Settings, engine: Engine, redis: Redis) -> Tracking:
    sns = SnsVerifier(settings.sns_cert_host_pattern, settings.sns_cert_require_https, settings.sns_topic_arns)
    from sender.dns_resolvers import async_resolver

    mx = MxProviders(async_resolver(settings.dns_nameservers, min(settings.dns_timeout_s, 3.0)))
    return Tracking(engine, redis, settings.signing_keys, feedback_recorder(settings, engine, redis), sns,
                    machine_rules(settings), mx)


def body_filter(settings: Settings, engine: Engine) -> TrackingBodyFilter:
    return TrackingBodyFilter(engine, settings.signing_keys, settings.public_url)


def engagement_consumer(settings: Settings, engine: Engine, redis: Redis) -> EngagementConsumer:
    return EngagementConsumer(engine, redis, machine_rules(settings), reclaim_idle_s=settings.reclaim_idle_s)


def outcome_sink(redis: Redis) -> DomainCounterSink:
    return DomainCounterSink(redis)


class TrackingSignals:
    """`sender.thresholds_monitor.CampaignSignals`, implemented from the tracking counters."""

    def __init__(self, engine: Engine, redis: Redis) -> None:
        self.engine = engine
        self.redis = redis

    async def campaign(self, campaign_id: int):  # type: ignore[no-untyped-def]
        from sender.thresholds_monitor import Signals

        f = await campaign_signals(self.redis, campaign_id)
        return Signals(unique_human_opens=f.unique_human_opens, machine_opens=f.machine_opens, domains=f.domains)

    async def transactional(self, account_id: int, since: datetime):  # type: ignore[no-untyped-def]
        from sender.thresholds_monitor import Signals

        f = await transactional_signals(self.engine, account_id, since)
        return Signals(unique_human_opens=f.unique_human_opens, machine_opens=f.machine_opens, domains=f.domains)
