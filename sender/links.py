"""Per-message links and addresses: unsubscribe URL and mailto, X-Envoi-Ref, VERP return-path."""

from __future__ import annotations

from collections.abc import Sequence

from tracking.verp import Verp
from unsubscribe.tokens import PURPOSE_REF, PURPOSE_UNSUBSCRIBE, LinkClaims, LinkSigner


class Links:
    def __init__(self, keys: Sequence[str], public_url: str, bounce_domain: str, unsubscribe_mailbox: str) -> None:
        self.signer = LinkSigner(keys)
        self.verp = Verp(keys, bounce_domain)
        self.public_url = public_url.rstrip("/")
        self.unsubscribe_mailbox = unsubscribe_mailbox

    def unsubscribe_token(self, account_id: int, contact_id: int, message_id: int, campaign_id: int) -> str:
        return self.signer.sign(LinkClaims(PURPOSE_UNSUBSCRIBE, account_id, contact_id, message_id, campaign_id))

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.public_url}/u/{token}"

    def unsubscribe_mailto(self, token: str) -> str:
        local, _, domain = self.unsubscribe_mailbox.partition("@")
        return f"mailto:{local}+{token}@{domain}?subject=unsubscribe"

    def ref(self, account_id: int, contact_id: int, message_id: int, campaign_id: int) -> str:
        return self.signer.sign(LinkClaims(PURPOSE_REF, account_id, contact_id, message_id, campaign_id))
