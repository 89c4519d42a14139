"""DKIM keys: generation, encryption at rest, the DNS record to publish, and selector naming for rotation.

Private keys never touch storage in clear: they are sealed with AES-256-GCM under a *platform key* that
comes from the environment (`ENVOI_DKIM_PLATFORM_KEYS`). Each sealed key names the platform key that sealed
it, so the platform key can rotate: the keyring keeps old keys for opening, seals with the newest, and
`reseal` moves a stored key to the newest one. The AES-GCM associated data binds a sealed key to its
(domain, selector), so a database row copied onto another domain does not open.

DKIM keys themselves rotate by selector (RFC 6376 §3.1, M3AAWG DKIM key rotation): publish the new selector's
record, switch signing to it once DNS answers, keep the old record published for a few days, then remove it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sender.dkim import PrivateKey

ENV_VAR = "ENVOI_DKIM_PLATFORM_KEYS"
_SEAL_VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class DkimKeyError(ValueError):
    """A platform key or a sealed DKIM key is malformed, unknown or does not open."""


class KeyKind(StrEnum):
    RSA = "rsa"  # rsa-sha256, 2048 bits (RFC 8301 §3.2 SHOULD)
    ED25519 = "ed25519"  # ed25519-sha256 (RFC 8463)


@dataclass(frozen=True, slots=True)
class PlatformKeyring:
    """AES-256 platform keys by id; `current` seals, every key opens. Parse it once at start-up."""

    keys: Mapping[str, bytes]
    current: str

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise DkimKeyError(f"current platform key id {self.current!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise DkimKeyError(f"platform key id {key_id!r}: use 1-32 of [A-Za-z0-9_-]")
            if len(key) != 32:
                raise DkimKeyError(f"platform key {key_id!r} is {len(key)} bytes; AES-256 needs 32")

    @classmethod
    def parse(cls, value: str, *, source: str = ENV_VAR) -> PlatformKeyring:
        """`"id2:BASE64,id1:BASE64"`: comma-separated `id:base64(32 bytes)`, the first one seals."""
        keys: dict[str, bytes] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            key_id, sep, b64 = item.partition(":")
            if not sep:
                raise DkimKeyError(f"{source}: entry {key_id[:8]!r}... is not `id:base64`")
            try:
                keys[key_id.strip()] = base64.b64decode(b64.strip(), validate=True)
            except binascii.Error as exc:
                raise DkimKeyError(f"{source}: platform key {key_id!r} is not valid base64") from exc
        if not keys:
            raise DkimKeyError(f"{source} is empty: set it to `id:base64(32 random bytes)`")
        try:
            return cls(keys=keys, current=next(iter(keys)))
        except DkimKeyError as exc:
            raise DkimKeyError(f"{source}: {exc}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str], name: str = ENV_VAR) -> PlatformKeyring:
        value = environ.get(name)
        if value is None:
            raise DkimKeyError(f"{name} is not set: DKIM private keys cannot be stored or read")
        return cls.parse(value, source=name)

    @staticmethod
    def new_key() -> str:
        """A fresh platform key, base64, for the operator to put in the environment."""
        return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


# ---------------------------------------------------------------------------------------------------------
# Generation and publication


def generate_key(kind: KeyKind = KeyKind.RSA) -> PrivateKey:
    if kind is KeyKind.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def key_kind(key: PrivateKey) -> KeyKind:
    return KeyKind.RSA if isinstance(key, rsa.RSAPrivateKey) else KeyKind.ED25519


def public_key_b64(key: PrivateKey) -> str:
    """The `p=` value: base64 SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1), the raw 32-byte key for
    Ed25519 (RFC 8463 §4)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(der).decode("ascii")


def dns_txt_value(key: PrivateKey) -> str:
    """The TXT record value to publish, e.g. `v=DKIM1; k=rsa; p=MIIBIjAN...`. An RSA-2048 value is longer than
    255 bytes: the DNS provider (or our zone file) splits it into several strings, which verifiers join."""
    return f"v=DKIM1; k={key_kind(key)}; p={public_key_b64(key)}"


def dns_record_name(selector: str, domain: str) -> str:
    """Where the record lives: `<selector>._domainkey.<domain>` (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain.rstrip('.')}"


def selector_name(kind: KeyKind, when: dt.date, *, prefix: str = "envoi", taken: frozenset[str] = frozenset()) -> str:
    """A new selector for a rotation on `when`: `envoi-rsa-20261126`, then `-2`, `-3`... if already taken.
    Dated names make the age of a published key visible in DNS and never reuse a retired selector."""
    base = f"{prefix}-{kind}-{when:%Y%m%d}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


@dataclass(frozen=True, slots=True)
class NewDkimKey:
    """What a rotation produces: the sealed key to store and the record the customer must publish."""

    domain: str
    selector: str
    kind: KeyKind
    sealed: str  # store this; open with `open_private_key`
    record_name: str  # e.g. envoi-rsa-20261126._domainkey.example.com
    record_value: str  # e.g. v=DKIM1; k=rsa; p=...


def create_key(
    domain: str,
    keyring: PlatformKeyring,
    *,
    kind: KeyKind = KeyKind.RSA,
    when: dt.date,
    taken: frozenset[str] = frozenset(),
) -> NewDkimKey:
    """Generate a key under a fresh selector and seal it: one step of a rotation."""
    key = generate_key(kind)
    selector = selector_name(kind, when, taken=taken)
    return NewDkimKey(
        domain=domain,
        selector=selector,
        kind=kind,
        sealed=seal_private_key(key, keyring, domain=domain, selector=selector),
        record_name=dns_record_name(selector, domain),
        record_value=dns_txt_value(key),
    )


# ---------------------------------------------------------------------------------------------------------
# Encryption at rest


def _aad(domain: str, selector: str) -> bytes:
    return f"envoi-dkim|{domain.rstrip('.').lower()}|{selector.lower()}".encode()


def seal_private_key(key: PrivateKey, keyring: PlatformKeyring, *, domain: str, selector: str) -> str:
    """The private key (PKCS#8 DER) sealed with the current platform key: `v1.<key id>.<base64 nonce+ct>`."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    nonce = os.urandom(12)  # 96-bit random nonce (NIST SP 800-38D §8.2.2); one per sealing
    sealed = AESGCM(keyring.keys[keyring.current]).encrypt(nonce, der, _aad(domain, selector))
    return f"{_SEAL_VERSION}.{keyring.current}.{base64.b64encode(nonce + sealed).decode('ascii')}"


def sealed_key_id(token: str) -> str:
    """Which platform key sealed this token (to find rows still to reseal after a rotation)."""
    return _parse(token)[0]


def open_private_key(token: str, keyring: PlatformKeyring, *, domain: str, selector: str) -> PrivateKey:
    key_id, blob = _parse(token)
    platform_key = keyring.keys.get(key_id)
    if platform_key is None:
        raise DkimKeyError(f"sealed with platform key {key_id!r}, which is not in the keyring")
    try:
        der = AESGCM(platform_key).decrypt(blob[:12], blob[12:], _aad(domain, selector))
    except InvalidTag as exc:
        raise DkimKeyError(f"the DKIM key for {selector}._domainkey.{domain} does not open") from exc
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"sealed key of unsupported type {type(key).__name__}")
    return key


def reseal(token: str, keyring: PlatformKeyring, *, domain: str, selector: str) -> str:
    """Re-encrypt under the current platform key (platform key rotation); unchanged if already current."""
    if sealed_key_id(token) == keyring.current:
        return token
    key = open_private_key(token, keyring, domain=domain, selector=selector)
    return seal_private_key(key, keyring, domain=domain, selector=selector)


def _parse(token: str) -> tuple[str, bytes]:
    version, _, rest = token.partition(".")
    key_id, _, b64 = rest.partition(".")
    if version != _SEAL_VERSION or not key_id or not b64:
        raise DkimKeyError("not a sealed DKIM key (expected `v1.<key id>.<base64>`)")
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise DkimKeyError("sealed DKIM key: invalid base64") from exc
    if len(blob) < 12 + 16:
        raise DkimKeyError("sealed DKIM key: too short")
    return key_id, blob
