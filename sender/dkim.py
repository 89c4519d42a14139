"""DKIM signing (RFC 6376) on the hot path, with OpenSSL-backed crypto (`cryptography`).

One `DkimSigner` is built per (domain, selector, key) and reused for every message: `sign(message)` returns
the `DKIM-Signature:` header line(s) to prepend, already folded, CRLF-terminated. Canonicalization is
relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4). Algorithms: rsa-sha256 (RSA-2048 SHOULD, RFC 8301; rsa-sha1 is
forbidden and not offered) and ed25519-sha256 (RFC 8463), optionally both on the same message.

Why not the `email` package or dkimpy's signer: the message leaves the composer as bytes in wire form, and
re-parsing it costs more than signing it; dkimpy's RSA is pure Python (≈12 ms per signature). Here headers
are found with one bytes split and the only expensive step left is the RSA arithmetic in OpenSSL.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

PrivateKey = RSAPrivateKey | Ed25519PrivateKey

# STANDARDS.md §3: what we sign. Never Return-Path, Received or Bcc (added or removed in transit).
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
)

# Added, rewritten or removed on the way (RFC 6376 §5.4.1): signing them breaks signatures in transit.
NEVER_SIGNED = frozenset({"return-path", "received", "bcc", "dkim-signature", "authentication-results"})

MIN_RSA_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept smaller keys; we generate 2048.
_LINE_WIDTH = 76  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters.

_TAB_TO_SP = bytes.maketrans(b"\t", b" ")
_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by WSP ends a header field
_BARE_LF = re.compile(rb"(?<!\r)\n")


class DkimError(ValueError):
    """The message cannot be signed (no From header, malformed header block) or the key is unusable."""


@dataclass(frozen=True, slots=True)
class SelectorKey:
    """A private key and the selector under which its public half is published (`<s>._domainkey.<d>`)."""

    selector: str
    private_key: PrivateKey


# ---------------------------------------------------------------------------------------------------------
# Canonicalization (RFC 6376 §3.4) — module-level functions so that tests can check them on their own.


def to_crlf(message: bytes) -> bytes:
    """Bare LF becomes CRLF: SMTP transmits lines as CRLF (RFC 5321 §2.3.8), so that is what gets verified."""
    if message.count(b"\n") == message.count(b"\r\n"):
        return message
    return _BARE_LF.sub(b"\r\n", message)


def _collapse_wsp(data: bytes) -> bytes:
    """Every run of SP/HTAB becomes one SP. Plain bytes methods, not a regex: on a 5 KB body this is ~10x
    faster than `re.sub`, and the signer spends its whole non-RSA budget here."""
    data = data.translate(_TAB_TO_SP)
    while b"  " in data:  # each pass halves the runs: log2(longest run) passes
        data = data.replace(b"  ", b" ")
    return data


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case name, unfold, WSP runs → one SP, no WSP around the colon or at the end."""
    name, sep, value = field.partition(b":")
    if not sep:
        raise DkimError(f"header field without a colon: {field[:40]!r}")
    value = _collapse_wsp(value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 (with §3.4.3's empty-line rule): the canonical body, CRLF line endings expected.

    A last line without CRLF is treated as a line (its trailing WSP goes): SMTP adds the CRLF in transit
    (RFC 5321 §4.1.1.4), so that is what the receiver canonicalizes."""
    body = _collapse_wsp(body).replace(b" \r\n", b"\r\n")  # after the collapse, at most one SP before CRLF
    if body.endswith(b" "):
        body = body[:-1]
    end = len(body)
    while body.endswith(b"\r\n", 0, end):  # drop the empty lines at the end (only whole CRLFs: a lone CR
        end -= 2  # is content)
    if end == 0:
        return b""  # an empty canonical body hashes as the empty string (RFC 6376 errata 3133)
    return body[:end] + b"\r\n"


def body_hash(body: bytes) -> bytes:
    """The `bh=` value: base64 of SHA-256 over the relaxed body."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


def split_message(message: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (raw, folding kept, no trailing CRLF) and the body (none without a blank line)."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head = head.removesuffix(b"\r\n")
        body = b""
    if not head:
        return [], body
    return _FIELD_SPLIT.split(head), body


def select_headers(fields: Sequence[bytes], wanted: Sequence[str]) -> list[tuple[str, bytes]]:
    """The instances to sign, as (lower-case name, raw field), in `h=` order.

    RFC 6376 §5.4.2: when a field occurs more than once, instances are signed from the bottom up, because a
    verifier matches the n-th occurrence of a name in `h=` with the n-th instance counted from the bottom.
    """
    wanted_bytes = frozenset(name.encode("ascii") for name in wanted)
    found: dict[bytes, list[bytes]] = {}
    for field in fields:
        colon = field.find(b":")
        if colon <= 0:
            raise DkimError(f"header field without a name: {field[:40]!r}")
        key = field[:colon].rstrip(b" \t").lower()
        if key in wanted_bytes:
            found.setdefault(key, []).append(field)
    selected: list[tuple[str, bytes]] = []
    for name in wanted:
        instances = found.get(name.encode("ascii"))
        if instances:
            selected.extend((name, field) for field in reversed(instances))
    return selected


# ---------------------------------------------------------------------------------------------------------


def _fold_list(prefix: str, items: Sequence[str], sep: str, first_column: int) -> str:
    """`prefix` + items joined by `sep`, folded after a separator when the line would pass the width."""
    out = [prefix]
    column = first_column + len(prefix)
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if column + len(piece) > _LINE_WIDTH and column > 1:
            out.append("\r\n\t")
            column = 1
        out.append(piece)
        column += len(piece)
    return "".join(out)


def _fold_b64(value: bytes) -> bytes:
    """The b= value in 72-character chunks; FWS inside b= is ignored by verifiers (RFC 6376 §3.5)."""
    return b"\r\n\t".join(value[i : i + 72] for i in range(0, len(value), 72))


class DkimSigner:
    """Signs messages for one domain with one key (and optionally a second, Ed25519, key: RFC 8463 §2)."""

    def __init__(
        self,
        domain: str,
        selector: str,
        private_key: PrivateKey,
        *,
        ed25519: SelectorKey | None = None,
        headers: Sequence[str] = SIGNED_HEADERS,
        oversign: bool = False,
        timestamp: bool = True,
    ) -> None:
        """`oversign` lists every signed name once more than it occurs, so that a header added in transit
        (a second From or Subject) breaks the signature (RFC 6376 §8.15). `timestamp` adds `t=`."""
        names = [h.strip().lower() for h in headers]
        unsafe = NEVER_SIGNED.intersection(names)
        if unsafe:
            raise DkimError(f"never sign {sorted(unsafe)}: they change in transit (STANDARDS.md §3)")
        names = ["from", *names]  # RFC 6376 §5.4: From MUST be signed; first, so sign() can check it
        self.domain = _dns_name(domain, "domain")
        selector = _dns_name(selector, "selector")
        self._names = tuple(dict.fromkeys(names))
        self._oversign = oversign
        self._timestamp = timestamp
        keys = [SelectorKey(selector, private_key)]
        if ed25519 is not None:
            if not isinstance(ed25519.private_key, Ed25519PrivateKey):
                raise DkimError("the second signature must use an Ed25519 key")
            keys.append(SelectorKey(_dns_name(ed25519.selector, "selector"), ed25519.private_key))
        self._keys = tuple(keys)
        for key in self._keys:
            if isinstance(key.private_key, RSAPrivateKey) and key.private_key.key_size < MIN_RSA_BITS:
                raise DkimError(f"RSA key of {key.private_key.key_size} bits: RFC 8301 requires >= 1024")
        # The tag prefix per key is fixed: build it once, not per message.
        self._prefixes = tuple(
            f"DKIM-Signature: v=1; a={_algorithm(k.private_key)}; c=relaxed/relaxed; d={self.domain};"
            f" s={k.selector};".encode("ascii")
            for k in self._keys
        )
        self._h_cache: dict[tuple[str, ...], str] = {}

    @property
    def selectors(self) -> tuple[str, ...]:
        return tuple(k.selector for k in self._keys)

    def sign(self, message: bytes, *, now: int | None = None) -> bytes:
        """The `DKIM-Signature:` field(s) for `message` (bytes, CRLF line endings), folded, CRLF-terminated,
        to be prepended to the message unchanged. With two keys, the RSA signature comes first."""
        fields, body = split_message(to_crlf(message))
        signed = select_headers(fields, self._names)
        if not signed or signed[0][0] != "from":
            raise DkimError("the message has no From header (RFC 6376 §5.4 requires signing it)")
        h_names = [name for name, _ in signed]
        if self._oversign:
            h_names.extend(dict.fromkeys(h_names))  # one more of each: an absent instance signs as null
        canon_headers = b"".join(relaxed_header(field) for _, field in signed)
        bh = body_hash(body).decode("ascii")
        h_tag = self._h_tag(tuple(h_names))
        if self._timestamp:
            h_tag = f"t={int(time.time()) if now is None else now}; {h_tag}"
        tail = f"\r\n\t{h_tag};\r\n\tbh={bh};\r\n\tb=".encode("ascii")
        out = []
        for key, prefix in zip(self._keys, self._prefixes, strict=True):
            raw = prefix + tail
            # RFC 6376 §3.7: the signature field itself, b= empty, relaxed, with no trailing CRLF.
            data = canon_headers + relaxed_header(raw)[:-2]
            out.append(raw + _fold_b64(base64.b64encode(_sign(key.private_key, data))) + b"\r\n")
        return b"".join(out)

    def _h_tag(self, names: tuple[str, ...]) -> str:
        # Messages of one campaign carry the same header set: fold the h= list once per set.
        tag = self._h_cache.get(names)
        if tag is None:
            first_column = 1 + (len("t=1234567890; ") if self._timestamp else 0)
            tag = _fold_list("h=", names, ":", first_column=first_column)
            if len(self._h_cache) < 256:
                self._h_cache[names] = tag
        return tag


_DNS_NAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


def _dns_name(name: str, what: str) -> str:
    """d= and s= are DNS names in A-label form (RFC 6376 §3.5): IDNA-encode, then check the labels."""
    try:
        ascii_name = name.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise DkimError(f"invalid {what} {name!r}: {exc}") from exc
    if not _DNS_NAME.match(ascii_name):
        raise DkimError(f"invalid {what} {name!r}")
    return ascii_name


def _algorithm(key: PrivateKey) -> str:
    if isinstance(key, RSAPrivateKey):
        return "rsa-sha256"
    if isinstance(key, Ed25519PrivateKey):
        return "ed25519-sha256"
    raise DkimError(f"unsupported key type {type(key).__name__}")


_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, RSAPrivateKey):
        return key.sign(data, _PKCS1, _SHA256)  # RSASSA-PKCS1-v1_5 over SHA-256 (RFC 6376 §3.3.1)
    # RFC 8463 §3: PureEdDSA Ed25519 over the SHA-256 hash of the canonicalized data, not the data itself.
    return key.sign(hashlib.sha256(data).digest())
