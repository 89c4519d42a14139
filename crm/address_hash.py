"""Keyed hashes of erased addresses (GDPR art. 17).

After an erasure only `HMAC-SHA256(platform key, normalised address)` stays on the suppression list, so a later
import of the same address is still suppressed, while a database dump alone does not reveal the address (an
unkeyed hash of an email address is reversed by a dictionary). The key must never rotate away: hashes made with
a key that is dropped no longer match (keep old keys in `previous`)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence

PREFIX = "hmac1:"  # marks hashed rows in `suppressions.address` (a real address never starts like this)


def normalise(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


class AddressHasher:
    def __init__(self, key: str, previous: Sequence[str] = ()) -> None:
        if len(key) < 32:
            raise ValueError("the erasure key must be at least 32 characters")
        self._keys = [k.encode() for k in (key, *previous)]

    def _digest(self, key: bytes, channel: str, address: str) -> str:
        msg = f"{channel}:{normalise(channel, address)}".encode()
        return PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()

    def hash(self, channel: str, address: str) -> str:
        """The value stored for an erased address (newest key)."""
        return self._digest(self._keys[0], channel, address)

    def candidates(self, channel: str, addresses: Iterable[str]) -> dict[str, str]:
        """{hash: address} for every key, to look a batch of addresses up in one query."""
        return {self._digest(k, channel, a): a for a in addresses for k in self._keys}


def is_hashed(address: str) -> bool:
    return address.startswith(PREFIX)
