"""Open and click tokens, on the shared signed-link format (`unsubscribe.tokens.LinkSigner`).

A click token must name the link without carrying the URL (else /c/ would redirect wherever a token says):
it carries the index of the link in the campaign's own link table, in the claims' `contact_id` slot — the
contact is known from the message anyway. With per-person tracking off the message and contact are 0: the
token then identifies only the campaign (and the link), and only aggregate counts can be kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unsubscribe.tokens import PURPOSE_CLICK, PURPOSE_OPEN, LinkClaims, LinkSigner, TokenError


@dataclass(frozen=True, slots=True)
class OpenClaims:
    account_id: int
    message_id: int  # 0: per-person tracking off
    campaign_id: int


@dataclass(frozen=True, slots=True)
class ClickClaims:
    account_id: int
    message_id: int  # 0: per-person tracking off
    campaign_id: int
    link_index: int


class TrackingTokens:
    def __init__(self, keys: Sequence[str]) -> None:
        self._signer = LinkSigner(keys)

    def open_token(self, account_id: int, message_id: int, campaign_id: int, contact_id: int = 0) -> str:
        return self._signer.sign(LinkClaims(PURPOSE_OPEN, account_id, contact_id, message_id, campaign_id))

    def click_token(self, account_id: int, message_id: int, campaign_id: int, link_index: int) -> str:
        return self._signer.sign(LinkClaims(PURPOSE_CLICK, account_id, link_index, message_id, campaign_id))

    def verify_open(self, token: str) -> OpenClaims | None:
        """None for anything forged, truncated, foreign (another purpose) or signed by a retired key."""
        try:
            c = self._signer.verify(token, PURPOSE_OPEN)
        except (TokenError, ValueError):
            return None
        return OpenClaims(c.account_id, c.message_id, c.campaign_id)

    def verify_click(self, token: str) -> ClickClaims | None:
        try:
            c = self._signer.verify(token, PURPOSE_CLICK)
        except (TokenError, ValueError):
            return None
        if c.campaign_id == 0:
            return None
        return ClickClaims(c.account_id, c.message_id, c.campaign_id, c.contact_id)
