"""`envoi domains check DOMAIN` (issue 7): the sending-domain verification report from the command line."""

from __future__ import annotations

import json
import sys

import click


@click.group()
def domains() -> None:
    """Sending domains: DNS verification (SPF, DKIM, DMARC, return path)."""


@domains.command("check")
@click.argument("domain")
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@click.option("--save/--no-save", default=False, help="record the result (and complete a pending key rotation)")
def check(domain: str, as_json: bool, save: bool) -> None:
    """Look up SPF, DKIM, DMARC and the bounce domain's MX, and print each check with the record to publish.

    Exit status 0 when the domain is verified, 1 otherwise. The DKIM keys are those Envoi stores for the domain
    (registered through POST /v1/domains); an unregistered domain gets the other checks."""
    from crm import sending_domains as repo
    from envoi.cli import _settings
    from envoi.composition import database
    from sender import domains as service
    from sender.dkim_keys import PlatformKeyring
    from sender.dns_resolvers import sync_resolver
    from sender.domain_check import verify_domain

    s = _settings()
    resolver = sync_resolver(s.dns_nameservers, s.dns_timeout_s)
    policy = service.DomainPolicy(s.spf_include, s.bounce_domain, s.dkim_ed25519)
    engine = database(s)
    try:
        with engine.connect() as conn:
            d = repo.find_domain(conn, None, domain)
        if d is None:
            report = verify_domain(resolver, repo.normalise(domain), [], spf_include=s.spf_include,
                                   bounce_domain=s.bounce_domain)
        else:
            ring = PlatformKeyring.parse(s.dkim_platform_keys)
            report = (service.verify(engine, ring, resolver, d, policy) if save
                      else service.check(ring, resolver, d, policy)[0])
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(f"{report.domain}: {'VERIFIED' if report.verified else 'NOT VERIFIED'}")
        for c in report.checks:
            click.echo(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
            if not c.ok and c.record_value:
                click.echo(f"        publish  {c.record_name} {c.record_type} \"{c.record_value}\"")
            for found in c.found:
                click.echo(f"        found    {found}")
    sys.exit(0 if report.verified else 1)
