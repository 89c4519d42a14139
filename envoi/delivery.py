"""Composition of the direct-to-MX delivery (issue 7): the transport and the shaping guard from settings.

`ENVOI_DELIVERY_MODE=direct` makes the worker use `direct_transport(settings)` instead of the relay transport
(wired in `envoi.worker.build_transport`) and adds `shaping_guard(settings)` to the dispatch hooks."""

from __future__ import annotations

from envoi.composition import make_redis
from envoi.settings import Settings
from sender.direct import DirectConfig, DirectMxTransport
from sender.dns_resolvers import async_resolver
from sender.mx import MxResolver
from sender.shaper import Shaper
from sender.shaping import ShapingPolicy, policy_for
from sender.shaping_guard import ShapingGuard


def _policy(settings: Settings):  # type: ignore[no-untyped-def]
    required = frozenset(settings.tls_required)

    def policy(destination: str, domain: str) -> ShapingPolicy:
        # TLS required by provider name ("gmail") or by recipient domain ("example.fr").
        return policy_for(destination, tls_required=required | ({destination} if domain in required else set()))

    return policy


def mx_resolver(settings: Settings) -> MxResolver:
    return MxResolver(async_resolver(settings.dns_nameservers, settings.dns_timeout_s))


def direct_transport(settings: Settings) -> DirectMxTransport:
    return DirectMxTransport(
        mx_resolver(settings), Shaper(make_redis(settings)), _policy(settings),
        DirectConfig(port=settings.mx_port, helo_name=settings.smtp.helo_name, timeout_s=settings.smtp.timeout_s),
    )


def shaping_guard(settings: Settings) -> ShapingGuard:
    return ShapingGuard(mx_resolver(settings), Shaper(make_redis(settings)), _policy(settings))
