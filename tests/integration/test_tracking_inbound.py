"""Issue 4: the inbound SMTP listener's router, over real SMTP on loopback (aiosmtpd server, aiosmtplib client)."""

from __future__ import annotations

import aiosmtplib
import pytest

from tracking.engagement import Hit
from tracking.inbound import InboundMessage, InboundRouter, InboundServer, domain_is, mailbox_is
from tracking.machine import MachineReason


async def test_mail_is_routed_by_recipient_refused_when_unclaimed_and_retried_on_handler_error():
    got: list[InboundMessage] = []

    async def keep(msg: InboundMessage) -> None:
        got.append(msg)

    async def broken(msg: InboundMessage) -> None:
        raise RuntimeError("database down")

    router = InboundRouter()
    router.register(mailbox_is("unsubscribe@envoi.test"), keep, "unsubscribe")
    router.register(mailbox_is("fbl@envoi.test"), broken, "fbl")
    router.register(domain_is("bounces.envoi.test"), keep, "bounces")
    server = await InboundServer(router, "127.0.0.1", 0).start()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10, start_tls=False) as smtp:
            await smtp.sendmail("", ["Unsubscribe+TOKEN@envoi.test"], b"Subject: x\r\n\r\nbody\r\n")
            await smtp.sendmail("", ["b.1z.abcdefgh@bounces.envoi.test"], b"Subject: dsn\r\n\r\nbody\r\n")
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await smtp.sendmail("x@example.org", ["postmaster@elsewhere.example"], b"Subject: relay?\r\n\r\n")
            assert refused.value.recipients[0].code == 550
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await smtp.sendmail("", ["fbl@envoi.test"], b"Subject: arf\r\n\r\nbody\r\n")
            assert failed.value.code == 451  # the reporting MTA keeps the report and retries
    finally:
        await server.stop()
    assert [m.rcpt for m in got] == ["Unsubscribe+TOKEN@envoi.test", "b.1z.abcdefgh@bounces.envoi.test"]
    assert got[0].mail_from == "" and got[0].data.endswith(b"body\r\n") and got[0].peer == "127.0.0.1"
    assert router.names == ["unsubscribe", "fbl", "bounces"]


def test_predicates_match_mailboxes_and_subaddresses_not_lookalikes():
    m = mailbox_is("fbl@envoi.test")
    assert m("fbl@envoi.test") and m("FBL+yahoo@Envoi.Test")
    assert not m("fblx@envoi.test") and not m("fbl@envoi.test.evil") and not m("fbl@other.test")
    d = domain_is("bounces.envoi.test")
    assert d("b.1.x@bounces.envoi.test") and d("b.1.x@BOUNCES.envoi.test.")
    assert not d("b.1.x@evil-bounces.envoi.test") and not d("b.1.x@envoi.test")


def test_hits_survive_the_stream_packing():
    for hit in (Hit(False, 1, 2, 3, 1700000000.125), Hit(True, 1, 0, 3, 1.5, MachineReason.HEAD, 7)):
        assert Hit.unpack(hit.pack()) == hit
    assert Hit.unpack("garbage") is None and Hit.unpack("o,1,x,3,1.0,,") is None


async def test_providers_come_from_the_mx_when_the_domain_is_not_a_known_mailbox_domain():
    from tests.support.dns_server import DnsServer
    from tracking.mx_providers import MxProviders

    with DnsServer() as dns_srv:
        dns_srv.zone.add("acme-corp.fr", "MX", "10 acme-corp-fr.mail.protection.outlook.com.")
        dns_srv.zone.add("shop.example", "MX", "10 aspmx.l.google.com.", "20 alt1.aspmx.l.google.com.")
        dns_srv.zone.add("self.example", "MX", "10 mx.self.example.")
        dns_srv.zone.fail("broken.example", "SERVFAIL")
        mx = MxProviders(dns_srv.async_resolver(timeout=1.0))
        got = await mx.providers(["acme-corp.fr", "shop.example", "self.example", "broken.example", "gmail.com", "-"])
        assert got == {"acme-corp.fr": "microsoft", "shop.example": "google", "gmail.com": "google"}
        await mx.providers(["acme-corp.fr"])
        assert dns_srv.query_count("acme-corp.fr", "MX") == 1  # cached
        assert dns_srv.query_count("gmail.com") == 0  # well-known: no lookup
