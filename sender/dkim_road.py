"""`DomainDkimSigner`: the dispatcher's `MessageSigner` that DKIM-signs each message with its From domain's key.

The From domain is read from the assembled message (one bytes search in the header block), the account's
sending domain that covers it is found (itself or its closest registered parent: DMARC relaxed alignment), and
a `DkimSigner` built once per (account, domain) is reused: RSA-2048 with the active selector, plus an Ed25519
signature when the domain has an active Ed25519 key (RFC 8463 dual signing). Headers per STANDARDS.md §3.

Keys are opened (AES-GCM) only when a signer is built; built signers are kept `refresh_s` seconds so a rotation
(a new active selector) is picked up without a restart. A message whose From domain has no key goes unsigned
(relay mode: the smarthost may sign it); a key that does not open is logged and the message goes unsigned too —
an unsigned message is better than a stopped campaign, and the verification report shows the problem.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from crm import sending_domains as repo
from sender.dkim import DkimError, DkimSigner, SelectorKey
from sender.dkim_keys import DkimKeyError, PlatformKeyring, open_private_key

log = logging.getLogger(__name__)

_FROM = re.compile(rb"(?:^|\r\n)From:((?:[^\r\n]|\r\n[ \t])*)", re.IGNORECASE)  # the field, unfolded or not
_DOMAIN = re.compile(rb"@([A-Za-z0-9.-]+)")


def from_domain(data: bytes) -> str | None:
    """The domain of the From address, in the header block only. The *last* `@` of the field: a quoted display
    name may contain one (`"a@b" <news@shop.fr>`), the address comes after it."""
    end = data.find(b"\r\n\r\n")
    m = _FROM.search(data, 0, end if end >= 0 else len(data))
    if m is None:
        return None
    field = m.group(1)
    at = field.rfind(b"@")
    d = _DOMAIN.match(field, at) if at >= 0 else None
    return d.group(1).decode("ascii").lower().rstrip(".") if d else None


class DomainDkimSigner:
    def __init__(self, engine: Engine, keyring: PlatformKeyring, *, refresh_s: float = 60.0) -> None:
        self.engine = engine
        self.keyring = keyring
        self.refresh_s = refresh_s
        self._signers: dict[tuple[int, str], tuple[float, DkimSigner | None]] = {}

    def sign(self, data: bytes, message: Mapping[str, Any]) -> bytes:
        domain = from_domain(data)
        if domain is None:
            return data
        signer = self.signer_for(int(message["account_id"]), domain)
        if signer is None:
            return data
        try:
            return signer.sign(data) + data
        except DkimError as exc:
            log.warning("DKIM signing failed for message %s: %s", message.get("id"), exc)
            return data

    def signer_for(self, account_id: int, domain: str) -> DkimSigner | None:
        key = (account_id, domain)
        cached = self._signers.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        # A miss costs one indexed SQL query, once per domain per refresh period: fine on the loop.
        signer = self._build(account_id, domain)
        self._signers[key] = (now + self.refresh_s, signer)
        return signer

    def _build(self, account_id: int, domain: str) -> DkimSigner | None:
        with self.engine.connect() as conn:
            d = repo.signing_domain(conn, account_id, domain)
        if d is None:
            return None
        rsa, ed = d.active("rsa"), d.active("ed25519")
        if rsa is None:
            return None
        try:
            rsa_key = open_private_key(rsa.sealed, self.keyring, domain=d.domain, selector=rsa.selector)
            second = None
            if ed is not None:
                second = SelectorKey(ed.selector, open_private_key(ed.sealed, self.keyring, domain=d.domain,
                                                                   selector=ed.selector))
            return DkimSigner(d.domain, rsa.selector, rsa_key, ed25519=second)
        except (DkimKeyError, DkimError) as exc:
            log.error("DKIM key of %s cannot be used: %s", d.domain, exc)
            return None
