"""DKIM end to end: keys generated and sealed by `sender.dkim_keys`, their records served by a real DNS server
on loopback, messages signed by `sender.dkim`, and dkimpy's verifier fetching the keys through dnspython."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization

from sender.dkim import DkimSigner, SelectorKey
from sender.dkim_keys import (
    ENV_VAR,
    DkimKeyError,
    KeyKind,
    NewDkimKey,
    PlatformKeyring,
    create_key,
    dns_txt_value,
    open_private_key,
    reseal,
    sealed_key_id,
    selector_name,
)
from tests.support.dns_server import DnsServer

DOMAIN = "shop.example"
TODAY = dt.date(2026, 11, 26)
DnsFunc = Callable[..., bytes | None]


def _platform_key() -> str:
    return PlatformKeyring.new_key()


@pytest.fixture(scope="module")
def keyring() -> PlatformKeyring:
    return PlatformKeyring.parse(f"k1:{_platform_key()}")


@pytest.fixture(scope="module")
def rsa_key(keyring: PlatformKeyring) -> NewDkimKey:
    return create_key(DOMAIN, keyring, kind=KeyKind.RSA, when=TODAY)


@pytest.fixture(scope="module")
def ed_key(keyring: PlatformKeyring) -> NewDkimKey:
    return create_key(DOMAIN, keyring, kind=KeyKind.ED25519, when=TODAY)


@pytest.fixture
def dns_srv(rsa_key: NewDkimKey, ed_key: NewDkimKey) -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.zone.add_txt(rsa_key.record_name, rsa_key.record_value)
        server.zone.add_txt(ed_key.record_name, ed_key.record_value)
        yield server
        assert server.errors == []


def dnsfunc_for(resolver: dns.resolver.Resolver) -> DnsFunc:
    """dkimpy's `dnsfunc`: the TXT record at `name`, its strings joined (RFC 6376 §3.6.2.2), or None."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(next(iter(answer)).strings)

    return dnsfunc


def signer_from_storage(key: NewDkimKey, keyring: PlatformKeyring, **options: object) -> DkimSigner:
    private = open_private_key(key.sealed, keyring, domain=key.domain, selector=key.selector)
    return DkimSigner(key.domain, key.selector, private, **options)  # type: ignore[arg-type]


def campaign_message(n: int = 1) -> bytes:
    """About 5 KB, shaped like what the composer emits: multipart/alternative, quoted-printable, list headers."""
    text = ("Bonjour Camille, voici les nouveautés de la semaine chez Shop.\r\n" * 30).encode()
    html = ("<p>Bonjour <b>Camille</b>, voici les nouveautés de la semaine.</p>\r\n" * 30).encode()
    return b"".join(
        [
            b"From: Shop <news@shop.example>\r\n",
            b"To: camille@example.org\r\n",
            b"Subject: =?utf-8?q?Nouveaut=C3=A9s_de_la_semaine?=\r\n",
            b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n",
            f"Message-ID: <{n}.campaign7@shop.example>\r\n".encode(),
            b"Reply-To: contact@shop.example\r\n",
            b"MIME-Version: 1.0\r\n",
            b"List-Id: Shop news <news.shop.example>\r\n",
            b"List-Unsubscribe: <https://u.envoi.example/u/abc>,\r\n <mailto:unsub-abc@bounce.envoi.example>\r\n",
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            b"Feedback-ID: 7:42:campaign:envoi\r\n",
            b'Content-Type: multipart/alternative; boundary="b1"\r\n',
            b"\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            text,
            b"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
            html,
            b"--b1--\r\n",
        ]
    )


def test_sample_message_is_about_5_kb() -> None:
    assert 4_500 < len(campaign_message()) < 6_500


def test_signed_message_verifies_with_dkimpy_through_dns(
    dns_srv: DnsServer, rsa_key: NewDkimKey, keyring: PlatformKeyring
) -> None:
    message = campaign_message()
    signed = signer_from_storage(rsa_key, keyring).sign(message) + message
    assert dkim.verify(signed, dnsfunc=dnsfunc_for(dns_srv.resolver()))
    # The RSA-2048 record is longer than one 255-byte TXT string: the verifier read it from several.
    assert len(rsa_key.record_value) > 255
    assert dns_srv.query_count(rsa_key.record_name, "TXT") == 1
    h = signed.split(b"bh=")[0].replace(b"\r\n\t", b"")
    for name in [b"list-unsubscribe-post", b"feedback-id", b"list-id", b"reply-to", b"mime-version"]:
        assert name in h


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"voici les nouveaut", b"voila les nouveaut"),  # body
        (b"Subject: =?utf-8?q?Nouveaut", b"Subject: =?utf-8?q?Ancienne"),  # signed header
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: List-Unsubscribe=No"),
        (b"To: camille@example.org", b"To: someone-else@example.org"),
    ],
    ids=["body", "subject", "list-unsubscribe-post", "to"],
)
def test_tampering_fails_verification(
    dns_srv: DnsServer, rsa_key: NewDkimKey, keyring: PlatformKeyring, old: bytes, new: bytes
) -> None:
    message = campaign_message()
    header = signer_from_storage(rsa_key, keyring).sign(message)
    dnsfunc = dnsfunc_for(dns_srv.resolver())
    assert dkim.verify(header + message, dnsfunc=dnsfunc)
    assert old in message
    assert not dkim.verify(header + message.replace(old, new, 1), dnsfunc=dnsfunc)


def test_relaxed_changes_in_transit_still_verify(
    dns_srv: DnsServer, rsa_key: NewDkimKey, keyring: PlatformKeyring
) -> None:
    message = campaign_message()
    header = signer_from_storage(rsa_key, keyring).sign(message)
    in_transit = (
        b"Received: from mx.relay.example by mx.example.org\r\n"  # unsigned headers added on the way
        + header
        + message.replace(b"Reply-To: contact@shop.example", b"reply-to:   contact@shop.example \t")
        .replace(b"Subject: =?utf-8", b"Subject:\r\n =?utf-8")  # re-folded
        .replace(b"chez Shop.\r\n", b"chez Shop.   \r\n", 3)  # trailing spaces added to body lines
        + b"\r\n\r\n"  # trailing empty lines
    )
    assert dkim.verify(in_transit, dnsfunc=dnsfunc_for(dns_srv.resolver()))


def test_oversigning_rejects_an_added_header(dns_srv: DnsServer, rsa_key: NewDkimKey, keyring: PlatformKeyring) -> None:
    message = campaign_message()
    # Prepended by someone replaying the message: verifiers read the bottom instance, so plain DKIM passes.
    added = b"Subject: Your account is locked\r\n"
    dnsfunc = dnsfunc_for(dns_srv.resolver())
    plain = signer_from_storage(rsa_key, keyring).sign(message)
    assert dkim.verify(plain + added + message, dnsfunc=dnsfunc)  # the weakness oversigning closes
    over = signer_from_storage(rsa_key, keyring, oversign=True).sign(message)
    assert dkim.verify(over + message, dnsfunc=dnsfunc)
    assert not dkim.verify(over + added + message, dnsfunc=dnsfunc)


def _verifies(message: bytes, idx: int, dnsfunc: DnsFunc) -> bool:
    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def test_rsa_and_ed25519_dual_signature_both_verify(
    dns_srv: DnsServer, rsa_key: NewDkimKey, ed_key: NewDkimKey, keyring: PlatformKeyring
) -> None:
    ed_private = open_private_key(ed_key.sealed, keyring, domain=DOMAIN, selector=ed_key.selector)
    signer = signer_from_storage(rsa_key, keyring, ed25519=SelectorKey(ed_key.selector, ed_private))
    assert signer.selectors == (rsa_key.selector, ed_key.selector)
    message = campaign_message()
    headers = signer.sign(message)
    assert headers.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in headers.split(b"DKIM-Signature:")[1]
    assert b"a=ed25519-sha256" in headers.split(b"DKIM-Signature:")[2]
    dnsfunc = dnsfunc_for(dns_srv.resolver())
    assert _verifies(headers + message, 0, dnsfunc)
    assert _verifies(headers + message, 1, dnsfunc)
    tampered = headers + message.replace(b"Camille", b"Camilla", 1)
    assert not _verifies(tampered, 0, dnsfunc)
    assert not _verifies(tampered, 1, dnsfunc)


def test_selector_rotation(dns_srv: DnsServer, rsa_key: NewDkimKey, keyring: PlatformKeyring) -> None:
    new = create_key(DOMAIN, keyring, when=TODAY, taken=frozenset({rsa_key.selector}))
    assert new.selector == f"{rsa_key.selector}-2" and new.record_name != rsa_key.record_name
    dnsfunc = dnsfunc_for(dns_srv.resolver())
    message = campaign_message()
    old_signed = signer_from_storage(rsa_key, keyring).sign(message) + message
    new_signed = signer_from_storage(new, keyring).sign(message) + message
    assert not dkim.verify(new_signed, dnsfunc=dnsfunc)  # not yet published: do not switch to it yet
    dns_srv.zone.add_txt(new.record_name, new.record_value)
    assert dkim.verify(new_signed, dnsfunc=dnsfunc)
    assert dkim.verify(old_signed, dnsfunc=dnsfunc)  # both published during the overlap
    dns_srv.zone.remove(rsa_key.record_name)
    assert not dkim.verify(old_signed, dnsfunc=dnsfunc)  # retired selector
    assert dkim.verify(new_signed, dnsfunc=dnsfunc)


# --- keys at rest ---------------------------------------------------------------------------------------


def _public_der(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("kind", list(KeyKind))
def test_keys_round_trip_through_encryption(keyring: PlatformKeyring, kind: KeyKind) -> None:
    new = create_key(DOMAIN, keyring, kind=kind, when=TODAY)
    assert new.sealed.startswith("v1.k1.")
    assert b"PRIVATE" not in base64.b64decode(new.sealed.split(".")[2])
    private = open_private_key(new.sealed, keyring, domain=DOMAIN, selector=new.selector)
    assert dns_txt_value(private) == new.record_value  # the opened key is the published one
    assert new.record_value.startswith(f"v=DKIM1; k={kind}; p=")
    raw_p = base64.b64decode(new.record_value.split("p=")[1])
    assert len(raw_p) == (32 if kind is KeyKind.ED25519 else len(_public_der(private)))


def test_sealed_key_is_bound_to_its_domain_and_selector(keyring: PlatformKeyring, rsa_key: NewDkimKey) -> None:
    with pytest.raises(DkimKeyError, match="does not open"):
        open_private_key(rsa_key.sealed, keyring, domain="other.example", selector=rsa_key.selector)
    with pytest.raises(DkimKeyError, match="does not open"):
        open_private_key(rsa_key.sealed, keyring, domain=DOMAIN, selector="other")


def test_wrong_or_tampered_platform_key_does_not_open(rsa_key: NewDkimKey) -> None:
    impostor = PlatformKeyring.parse(f"k1:{_platform_key()}")
    with pytest.raises(DkimKeyError, match="does not open"):
        open_private_key(rsa_key.sealed, impostor, domain=DOMAIN, selector=rsa_key.selector)
    unknown = PlatformKeyring.parse(f"k9:{_platform_key()}")
    with pytest.raises(DkimKeyError, match="k1"):
        open_private_key(rsa_key.sealed, unknown, domain=DOMAIN, selector=rsa_key.selector)
    for garbage in ("", "v1.k1.!!", "v2.k1.AAAA", "v1.k1.AAAA"):
        with pytest.raises(DkimKeyError):
            open_private_key(garbage, impostor, domain=DOMAIN, selector=rsa_key.selector)


def test_platform_key_rotation(rsa_key: NewDkimKey) -> None:
    old_b64, new_b64 = _platform_key(), _platform_key()
    before = PlatformKeyring.parse(f"k1:{old_b64}")
    private = create_key(DOMAIN, before, when=TODAY)
    during = PlatformKeyring.from_env({ENV_VAR: f"k2:{new_b64}, k1:{old_b64}"})
    assert during.current == "k2"
    resealed = reseal(private.sealed, during, domain=DOMAIN, selector=private.selector)
    assert sealed_key_id(private.sealed) == "k1" and sealed_key_id(resealed) == "k2"
    assert reseal(resealed, during, domain=DOMAIN, selector=private.selector) == resealed
    after = PlatformKeyring.parse(f"k2:{new_b64}")  # k1 retired once every row is resealed
    opened = open_private_key(resealed, after, domain=DOMAIN, selector=private.selector)
    assert dns_txt_value(opened) == private.record_value
    with pytest.raises(DkimKeyError, match="not in the keyring"):
        open_private_key(private.sealed, after, domain=DOMAIN, selector=private.selector)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, f"{ENV_VAR} is not set"),
        ({ENV_VAR: ""}, f"{ENV_VAR} is empty"),
        ({ENV_VAR: "no-colon"}, ENV_VAR),
        ({ENV_VAR: "k1:not base64!"}, f"{ENV_VAR}: platform key 'k1' is not valid base64"),
        ({ENV_VAR: f"k1:{base64.b64encode(b'short').decode()}"}, f"{ENV_VAR}: .*5 bytes"),
        ({ENV_VAR: f"bad id:{PlatformKeyring.new_key()}"}, f"{ENV_VAR}: platform key id"),
    ],
)
def test_bad_platform_key_configuration_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(DkimKeyError, match=message):
        PlatformKeyring.from_env(environ)


def test_selector_names_are_dated_and_unique() -> None:
    assert selector_name(KeyKind.RSA, TODAY) == "envoi-rsa-20261126"
    taken = frozenset({"envoi-ed25519-20261126", "envoi-ed25519-20261126-2"})
    assert selector_name(KeyKind.ED25519, TODAY, taken=taken) == "envoi-ed25519-20261126-3"
