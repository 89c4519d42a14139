"""dnspython resolvers built from configuration (`ENVOI_DNS_NAMESERVERS`: `host[:port],...`).

Empty configuration means the system resolver (/etc/resolv.conf). Tests aim both at a local authoritative
server on an ephemeral port. dnspython's own cache is off: `sender.mx` keeps a TTL-respecting cache of the
answers it actually uses, and domain verification must always see what DNS serves now.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.resolver


def _split(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith(":"):  # host:port, not a bare IPv6 address
        return host.strip("[]"), int(port)
    return server.strip("[]"), 53


def _aim(resolver: dns.resolver.Resolver | dns.asyncresolver.Resolver, nameservers: Sequence[str],
         timeout: float) -> None:
    if nameservers:
        hosts = [_split(s) for s in nameservers]
        resolver.port = hosts[0][1]  # set before `nameservers`: dnspython binds the port when the list is set
        resolver.nameservers = [h for h, _ in hosts]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None


def sync_resolver(nameservers: Sequence[str] = (), timeout: float = 5.0) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=not nameservers)
    _aim(resolver, nameservers, timeout)
    return resolver


def async_resolver(nameservers: Sequence[str] = (), timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    _aim(resolver, nameservers, timeout)
    return resolver
