"""VERP return-paths: `b.<base36 message id>.<signature>@<bounce domain>`.

A bounce sent to that address names the exact ledger message, and the signature makes the address
unforgeable, so a fake DSN cannot disable someone else's address."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_LOCAL = re.compile(r"^b\.([0-9a-z]{1,14})\.([a-z2-7]{8})$")


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _ALPHABET[r] + out
        if n == 0:
            return out


class Verp:
    def __init__(self, keys: Sequence[str], domain: str) -> None:
        self._keys = [hashlib.sha256(b"verp:" + k.encode()).digest() for k in keys]
        self.domain = domain

    def _sig(self, key: bytes, message_id: int) -> str:
        mac = hmac.new(key, str(message_id).encode(), hashlib.sha256).digest()
        return base64.b32encode(mac[:5]).decode().lower()

    def local_part(self, message_id: int) -> str:
        return f"b.{_b36(message_id)}.{self._sig(self._keys[0], message_id)}"

    def address(self, message_id: int) -> str:
        return f"{self.local_part(message_id)}@{self.domain}"

    def decode(self, address_or_local: str) -> int | None:
        """The message id if the address is one of ours with a valid signature, else None."""
        local = address_or_local.strip().strip("<>").partition("@")[0].lower()
        m = _LOCAL.match(local)
        if not m:
            return None
        message_id = int(m.group(1), 36)
        if any(hmac.compare_digest(m.group(2), self._sig(k, message_id)) for k in self._keys):
            return message_id
        return None
