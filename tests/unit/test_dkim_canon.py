"""Relaxed canonicalization (RFC 6376 §3.4.2, §3.4.4) and header selection, checked against the RFC's own
example, a table of edge cases, and dkimpy's canonicalizer as an independent oracle."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from sender.dkim import (
    DkimError,
    DkimSigner,
    SelectorKey,
    body_hash,
    relaxed_body,
    relaxed_header,
    select_headers,
    split_message,
    to_crlf,
)
from sender.dkim_keys import dns_txt_value

EMPTY_SHA256_B64 = b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


@pytest.mark.parametrize(
    ("field", "canonical"),
    [
        (b"Subject:  Hello   World  ", b"subject:Hello World\r\n"),
        (b"Subject: Hello\r\n\tWorld", b"subject:Hello World\r\n"),  # folded: unfold, WSP → one SP
        (b"Subject: Hello \r\n \r\n\tWorld \t", b"subject:Hello World\r\n"),  # several folds, trailing WSP
        (b"SUBJECT \t: x", b"subject:x\r\n"),  # WSP before the colon goes, name lower-cased
        (b"X-Empty:", b"x-empty:\r\n"),
        (b"X-Blank: \r\n ", b"x-blank:\r\n"),
        (b"To: a\tb,\t c", b"to:a b, c\r\n"),
        (b'Content-Type: text/plain;\r\n charset="UTF-8"', b'content-type:text/plain; charset="UTF-8"\r\n'),
    ],
)
def test_relaxed_header(field: bytes, canonical: bytes) -> None:
    assert relaxed_header(field) == canonical


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"", b""),  # empty body: the empty string (RFC 6376 errata 3133)
        (b"\r\n", b""),
        (b"\r\n\r\n\r\n", b""),
        (b"abc", b"abc\r\n"),  # no final CRLF: one is added
        (b"abc  \t", b"abc\r\n"),  # ... and trailing WSP on that last line still goes
        (b"abc \r\n", b"abc\r\n"),  # trailing WSP
        (b"abc\r\n \r\n\t\r\n\r\n", b"abc\r\n"),  # lines of WSP only are empty lines, dropped at the end
        (b" a \t b\r\n", b" a b\r\n"),  # leading WSP kept as one SP, inner runs reduced
        (b"a\r\n\r\n\r\nb\r\n", b"a\r\n\r\n\r\nb\r\n"),  # empty lines inside the body stay
        (b"abc\r", b"abc\r\r\n"),  # a lone CR is content, not a line end
        (b"abc\r\r\n\r\n", b"abc\r\r\n"),
        (b"abc\r\n\r", b"abc\r\n\r\r\n"),
    ],
)
def test_relaxed_body(body: bytes, canonical: bytes) -> None:
    assert relaxed_body(body) == canonical


def test_rfc6376_section_3_4_5_example() -> None:
    message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n"
    fields, body = split_message(message)
    assert b"".join(relaxed_header(f) for f in fields) == b"a:X\r\nb:Y Z\r\n"
    assert relaxed_body(body) == b" C\r\nD E\r\n"


def test_empty_body_hash_is_sha256_of_nothing() -> None:
    assert body_hash(b"") == EMPTY_SHA256_B64
    assert body_hash(b"\r\n\r\n") == EMPTY_SHA256_B64


_LINES = st.lists(st.text(alphabet="ab \t\r", max_size=12), max_size=8)  # \r: a lone CR is content


@settings(max_examples=300, deadline=None)
@given(lines=_LINES)
def test_body_canonicalization_matches_dkimpy(lines: list[str]) -> None:
    # Bodies as SMTP transmits them (every line CRLF-terminated): dkimpy is the independent reference.
    body = "".join(line + "\r\n" for line in lines).encode()
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["Subject", "TO", "x-a "]), parts=st.lists(st.text(alphabet="ab \t", max_size=6)))
def test_header_canonicalization_matches_dkimpy(name: str, parts: list[str]) -> None:
    value = "\r\n ".join(parts).encode()  # folded continuation lines
    [(cname, cvalue)] = Relaxed.canonicalize_headers([(name.encode(), value)])
    assert relaxed_header(name.encode() + b":" + value) == cname + b":" + cvalue


def test_split_message_keeps_folding_and_finds_the_body() -> None:
    fields, body = split_message(b"From: a@x\r\nSubject: one\r\n two\r\nTo: b@y\r\n\r\nbody\r\n")
    assert fields == [b"From: a@x", b"Subject: one\r\n two", b"To: b@y"]
    assert body == b"body\r\n"


def test_split_message_without_body() -> None:
    assert split_message(b"From: a@x\r\nTo: b@y\r\n") == ([b"From: a@x", b"To: b@y"], b"")


def test_bare_lf_is_read_as_crlf() -> None:
    assert to_crlf(b"From: a\nTo: b\r\n\nx\n") == b"From: a\r\nTo: b\r\n\r\nx\r\n"
    crlf = b"From: a\r\n\r\nx\r\n"
    assert to_crlf(crlf) is crlf  # the common case costs no copy


def test_duplicate_headers_are_selected_bottom_up() -> None:
    fields = [b"To: first@x", b"From: f@x", b"Subject: s", b"to: second@x", b"Received: r"]
    selected = select_headers(fields, ("from", "to", "subject"))
    assert selected == [
        ("from", b"From: f@x"),
        ("to", b"to: second@x"),  # RFC 6376 §5.4.2: the last instance is signed first
        ("to", b"To: first@x"),
        ("subject", b"Subject: s"),
    ]


# --- signatures, verified by dkimpy with an in-memory key table (the DNS path is in tests/integration) ---


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _dns(domain: str, **records: str) -> Callable[..., bytes | None]:
    table = {f"{sel}._domainkey.{domain}.".encode(): value.encode() for sel, value in records.items()}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return table.get(name)

    return dnsfunc


MESSAGE = (
    b"From: Shop <news@example.com>\r\n"
    b"To: first@example.org\r\n"
    b"Subject: Hello\r\n"
    b"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"Received: from somewhere\r\n"
    b"Return-Path: <bounce@example.com>\r\n"
    b"Bcc: hidden@example.org\r\n"
    b"\r\n"
    b"Hi!\r\n"
)


def _tags(header: bytes) -> dict[str, str]:
    value = header.split(b":", 1)[1].replace(b"\r\n", b"").decode()
    return {k.strip(): "".join(v.split()) for k, v in (t.split("=", 1) for t in value.split(";") if t.strip())}


def test_signature_header_shape(rsa_key: rsa.RSAPrivateKey) -> None:
    header = DkimSigner("Example.COM", "s1", rsa_key).sign(MESSAGE, now=1_795_000_000)
    lines = header.split(b"\r\n")
    assert header.endswith(b"\r\n") and lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)  # RFC 5322 §2.1.1
    assert all(line.startswith(b"\t") for line in lines[1:-1])  # folded, never a bare new field
    tags = _tags(header)
    assert tags["a"] == "rsa-sha256" and tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "example.com" and tags["s"] == "s1" and tags["t"] == "1795000000"
    assert tags["h"].split(":") == ["from", "to", "subject", "date", "message-id"]  # never Received/Bcc


def test_body_hash_equals_dkimpy_signer(rsa_key: rsa.RSAPrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    pem = rsa_key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    theirs = dkim.sign(MESSAGE, b"s1", b"example.com", pem, canonicalize=(b"relaxed", b"relaxed"))
    ours = DkimSigner("example.com", "s1", rsa_key).sign(MESSAGE)
    assert _tags(ours)["bh"] == _tags(theirs)["bh"]


def test_duplicate_headers_verify_and_their_order_is_signed(rsa_key: rsa.RSAPrivateKey) -> None:
    message = MESSAGE.replace(b"Subject:", b"To: second@example.org\r\nSubject:")
    dnsfunc = _dns("example.com", s1=dns_txt_value(rsa_key))
    header = DkimSigner("example.com", "s1", rsa_key).sign(message)
    assert _tags(header)["h"].startswith("from:to:to:subject")
    assert dkim.verify(header + message, dnsfunc=dnsfunc)
    swapped = message.replace(b"first@", b"TMP@").replace(b"second@", b"first@").replace(b"TMP@", b"second@")
    assert not dkim.verify(header + swapped, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"no final newline", b"trailing blanks  \r\n\r\n \r\n", b"x" * 1000 + b"\r\n"],
    ids=["empty", "crlf-only", "no-final-crlf", "trailing-blank-lines", "long-line"],
)
def test_edge_case_bodies_verify(rsa_key: rsa.RSAPrivateKey, body: bytes) -> None:
    message = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body
    header = DkimSigner("example.com", "s1", rsa_key).sign(message)
    # What the receiver gets: SMTP ends DATA with CRLF, so a body without one gains it in transit.
    sent = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert dkim.verify(header + sent, dnsfunc=_dns("example.com", s1=dns_txt_value(rsa_key)))


def test_bare_lf_message_verifies_as_transmitted(rsa_key: rsa.RSAPrivateKey) -> None:
    message = MESSAGE.replace(b"\r\n", b"\n")
    header = DkimSigner("example.com", "s1", rsa_key).sign(message)
    assert dkim.verify(header + to_crlf(message), dnsfunc=_dns("example.com", s1=dns_txt_value(rsa_key)))


def test_ed25519_signs_the_sha256_of_the_header_data() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    header = DkimSigner("example.com", "e1", key).sign(MESSAGE)
    tags = _tags(header)
    assert tags["a"] == "ed25519-sha256" and len(base64.b64decode(tags["b"])) == 64
    assert dkim.verify(header + MESSAGE, dnsfunc=_dns("example.com", e1=dns_txt_value(key)))


def test_message_without_from_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(DkimError, match="From"):
        DkimSigner("example.com", "s1", rsa_key).sign(b"To: a@b\r\nSubject: x\r\n\r\nbody\r\n")


def test_header_line_without_colon_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(DkimError, match="without a name"):
        DkimSigner("example.com", "s1", rsa_key).sign(b"From: a@b\r\nnot a header\r\n\r\nbody\r\n")


@pytest.mark.parametrize("domain", ["", "exa mple.com", "-bad.example", "a..b"])
def test_invalid_domain_is_refused(rsa_key: rsa.RSAPrivateKey, domain: str) -> None:
    with pytest.raises(DkimError, match="domain"):
        DkimSigner(domain, "s1", rsa_key)


@pytest.mark.parametrize("name", ["Received", "return-path", "Bcc"])
def test_headers_that_change_in_transit_are_never_signed(rsa_key: rsa.RSAPrivateKey, name: str) -> None:
    with pytest.raises(DkimError, match="never sign"):
        DkimSigner("example.com", "s1", rsa_key, headers=("from", "subject", name))


def test_from_is_always_signed_first(rsa_key: rsa.RSAPrivateKey) -> None:
    header = DkimSigner("example.com", "s1", rsa_key, headers=("subject", "to")).sign(MESSAGE)
    assert _tags(header)["h"] == "from:subject:to"


def test_second_signature_must_be_ed25519(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(DkimError, match="Ed25519"):
        DkimSigner("example.com", "s1", rsa_key, ed25519=SelectorKey("s2", rsa_key))


def test_idn_domain_is_signed_in_a_label_form() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    header = DkimSigner("café.example", "s1", key).sign(MESSAGE)
    assert _tags(header)["d"] == "xn--caf-dma.example"


def test_ed25519_signature_input_is_hashed_first() -> None:
    # RFC 8463 §3: the Ed25519 input is SHA-256(canonical header data), 32 bytes, not the data itself.
    key = ed25519.Ed25519PrivateKey.generate()
    signer = DkimSigner("example.com", "e1", key, timestamp=False)
    header = signer.sign(MESSAGE)
    signature = base64.b64decode(_tags(header)["b"])
    fields, _ = split_message(MESSAGE)
    unsigned = header[: header.index(b"b=", header.index(b"bh=") + 3) + 2]
    names = ("from", "to", "subject", "date", "message-id")
    data = b"".join(relaxed_header(f) for _, f in select_headers(fields, names))
    data += relaxed_header(unsigned)[:-2]
    key.public_key().verify(signature, hashlib.sha256(data).digest())  # raises if not
