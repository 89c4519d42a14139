"""Unsubscribe by email: the `mailto:` of `List-Unsubscribe` (RFC 2369 §3.2), `unsubscribe+<token>@<domain>`.

The token travels in the envelope recipient's sub-address, so the message itself is never parsed: its content
(subject "unsubscribe", or anything else) does not matter, and the same token rules apply as for the link. A
message with a bad token is accepted and dropped (answering an error would only make the sender's MTA retry).
Registered on the inbound SMTP router of the feedback slice (`tracking.inbound`) by `envoi.composition`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from crm import unsubscribes
from unsubscribe.service import UnsubscribeService
from unsubscribe.tokens import PURPOSE_UNSUBSCRIBE, LinkClaims, LinkSigner, TokenError

log = logging.getLogger(__name__)


class Inbound(Protocol):
    """What the handler reads of an inbound message (`tracking.inbound.InboundMessage` fits)."""

    @property
    def rcpt(self) -> str: ...


def token_of(rcpt: str, mailbox: str) -> str | None:
    """The token of `local+<token>@domain` when `local@domain` is our unsubscribe mailbox, else None."""
    address = rcpt.strip().strip("<>")
    local, _, domain = address.rpartition("@")
    box_local, _, box_domain = mailbox.partition("@")
    base, plus, token = local.partition("+")
    if not plus or not token or base.lower() != box_local.lower() or domain.lower() != box_domain.lower():
        return None
    return token


def claims_of(rcpt: str, mailbox: str, signer: LinkSigner) -> LinkClaims | None:
    """Pure part of the handler: the verified claims of an inbound unsubscribe address, or None."""
    token = token_of(rcpt, mailbox)
    if token is None:
        return None
    try:
        return signer.verify(token, PURPOSE_UNSUBSCRIBE)
    except TokenError:
        return None


def matches(mailbox: str) -> Callable[[str], bool]:
    """Router predicate: only sub-addresses of the unsubscribe mailbox (a bare mailbox carries no token)."""
    return lambda rcpt: token_of(rcpt, mailbox) is not None


def mailto_handler(mailbox: str, signer: LinkSigner, service: UnsubscribeService
                   ) -> Callable[[Inbound], Awaitable[None]]:
    async def unsubscribe_by_mail(msg: Inbound) -> None:
        c = claims_of(msg.rcpt, mailbox, signer)
        if c is None:
            log.info("mailto unsubscribe with an invalid token dropped")
            return
        # Errors propagate: the inbound server answers 451 and the sender's MTA retries (idempotent).
        await service.unsubscribe(unsubscribes.Request(c.account_id, c.contact_id, c.message_id, c.campaign_id,
                                                       unsubscribes.Scope.ACCOUNT, "mailto"))

    return unsubscribe_by_mail
