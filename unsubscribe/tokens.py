"""Signed, opaque tokens for unsubscribe and tracking links.

A token carries (purpose, account, contact, message, campaign) as compact integers, then a truncated
HMAC-SHA256 under the newest key of a rotating key set. Older keys keep verifying, so links in mail already
delivered survive a rotation (drop a key from the set to retire it). Ids are not secret, but nothing can be
forged or enumerated without the key: changing one digit invalidates the MAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

_MAC_BYTES = 16  # 128-bit tag
_FORMAT = ">BBQQQQ"  # version, purpose, account, contact, message, campaign
_VERSION = 1


class TokenError(ValueError):
    """The token is malformed, truncated, or signed by no key we know."""


@dataclass(frozen=True, slots=True)
class LinkClaims:
    purpose: int  # see PURPOSE_*
    account_id: int
    contact_id: int
    message_id: int
    campaign_id: int


PURPOSE_UNSUBSCRIBE = 1
PURPOSE_OPEN = 2
PURPOSE_CLICK = 3
PURPOSE_REF = 4  # X-Envoi-Ref header: finds our message in a returned original (ARF, DSN)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = [hashlib.sha256(k.encode()).digest() for k in keys]

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, claims: LinkClaims) -> str:
        payload = struct.pack(
            _FORMAT, _VERSION, claims.purpose, claims.account_id, claims.contact_id, claims.message_id,
            claims.campaign_id,
        )
        return _b64(payload + self._mac(self._keys[0], payload))

    def verify(self, token: str, purpose: int) -> LinkClaims:
        try:
            raw = _unb64(token)
        except (ValueError, TypeError) as exc:
            raise TokenError("not base64") from exc
        size = struct.calcsize(_FORMAT)
        if len(raw) != size + _MAC_BYTES:
            raise TokenError("wrong length")
        payload, mac = raw[:size], raw[size:]
        if not any(hmac.compare_digest(mac, self._mac(k, payload)) for k in self._keys):
            raise TokenError("bad signature")
        version, got_purpose, account, contact, message, campaign = struct.unpack(_FORMAT, payload)
        if version != _VERSION or got_purpose != purpose:
            raise TokenError("wrong purpose")
        return LinkClaims(got_purpose, account, contact, message, campaign)
