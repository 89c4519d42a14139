"""The SMS transport port: what the dispatcher needs from anything that hands SMS to a carrier gateway.

Adapters: `sender.twilio_transport` (the official Twilio SDK, asynchronous) and `sender.sms_capture` (the
`make run` default: one JSON line per SMS under ./var/). Like the email port (`sender.transport`), partial
failure is a return value, never an exception: one result per envelope, in order, each classified as
sent / transient / permanent (STYLE.md, "Errors").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sender.transport import Outcome

__all__ = ["Outcome", "SmsEnvelope", "SmsResult", "SmsSender", "SmsTransport"]

# Twilio identifiers and sender forms (issue 6: "a Messaging Service SID or a sender — alphanumeric sender id
# of up to 11 characters, or a number — per account").
_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ALPHANUMERIC_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


@dataclass(frozen=True, slots=True)
class SmsSender:
    """Who an account's SMS come from: a Messaging Service (Twilio picks the number) and/or a sender."""

    messaging_service_sid: str = ""
    from_: str = ""  # an E.164 number, or an alphanumeric sender id ("MARTIN", at most 11 characters)

    def __post_init__(self) -> None:
        if not self.messaging_service_sid and not self.from_:
            raise ValueError("sms sender: a messaging_service_sid or a from_ sender is required")
        if self.messaging_service_sid and not _SERVICE_SID.match(self.messaging_service_sid):
            raise ValueError(
                f"sms sender: messaging_service_sid {self.messaging_service_sid!r} is not MG + 32 hex digits"
            )
        if self.from_ and not (_E164.match(self.from_) or _ALPHANUMERIC_ID.match(self.from_)):
            raise ValueError(
                f"sms sender: from_ {self.from_!r} is neither an E.164 number nor an alphanumeric id"
                " (1-11 letters, digits or spaces, at least one letter)"
            )

    @property
    def rate_key(self) -> str:
        """What throughput is shaped on: the Messaging Service when there is one, else the sender itself."""
        return self.messaging_service_sid or self.from_


@dataclass(frozen=True, slots=True)
class SmsEnvelope:
    message_id: int  # the ledger id (crm messages.id)
    to: str  # E.164, as normalised at import (crm.phones)
    body: str  # the rendered text, sender name and opt-out mention already in (sender.sms_encoding)
    sender: SmsSender
    status_callback: str | None = None  # overrides the transport's default status callback URL


@dataclass(frozen=True, slots=True)
class SmsResult:
    message_id: int
    outcome: Outcome
    sid: str | None  # Twilio's message SID ("SM..."), the key of later status callbacks
    error_code: int | None = None  # Twilio error code (21211, 21610, ...), None on success or network error
    http_status: int | None = None  # None when no HTTP answer was read (timeout, refused connection)
    text: str = ""  # the gateway's status ("queued", "accepted") or the error description


class SmsTransport(Protocol):
    async def send(self, batch: Sequence[SmsEnvelope]) -> list[SmsResult]:
        """Hand every envelope to the gateway; return one result per envelope, in order."""
        ...

    async def close(self) -> None: ...
