"""The composition root: the one place that builds settings, engines, pools, transports and services."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from crm.db import make_engine, migrate
from envoi.http.deps import Services
from envoi.settings import Settings
from sender.hooks import BodyFilter, HandoffGuard, MessageSigner, OutcomeSink
from sender.links import Links
from sender.queue import DispatchQueue


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


def dispatch_hooks(settings: Settings, engine: Engine, redis: Redis) -> DispatchHooks:
    """The one place where the guardrails, tracking and unsubscribe slices are wired into the dispatcher."""
    hooks = DispatchHooks()
    _delivery_hooks(hooks, settings, engine)  # issue 7
    return hooks


def _delivery_hooks(hooks: DispatchHooks, settings: Settings, engine: Engine) -> None:
    """Issue 7: DKIM signing with each From domain's key, and (direct mode) the per-destination shaping guard
    that defers, without counting an attempt, what a suspended or rate-limited destination cannot take now."""
    from sender.dkim_keys import PlatformKeyring
    from sender.dkim_road import DomainDkimSigner

    hooks.signers.append(DomainDkimSigner(engine, PlatformKeyring.parse(settings.dkim_platform_keys)))
    if settings.delivery_mode == "direct":
        from envoi.delivery import shaping_guard

        hooks.guards.append(shaping_guard(settings))
