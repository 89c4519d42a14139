"""The email transport port: what the dispatcher needs from anything that hands mail to the next hop.

Adapters: `sender.smtp_pool` (aiosmtplib, a bounded pool of persistent connections) and the pipelined
fast path (`sender.smtp_pipelined`). Partial failure is a return value, never an exception: one result
per envelope, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: int  # the ledger id (crm messages.id)
    mail_from: str  # the VERP return-path
    rcpt_to: str
    data: bytes  # the whole RFC 5322 message, CRLF line endings, dot-stuffing NOT applied


class Outcome(StrEnum):
    SENT = "sent"  # 2xx after DATA
    TRANSIENT = "transient"  # 4xx, timeout, connection error: retry later
    PERMANENT = "permanent"  # 5xx for this recipient or message


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    message_id: int
    outcome: Outcome
    code: int | None  # the basic SMTP reply code, None when no reply was read (timeout, refused)
    enhanced: str | None  # RFC 3463 status such as "5.1.1", when the reply carried one
    text: str  # the reply text or the error description

    @property
    def reply(self) -> str:
        parts = [str(self.code) if self.code else "", self.enhanced or "", self.text]
        return " ".join(p for p in parts if p)


class EmailTransport(Protocol):
    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        """Hand every envelope to the next hop; return one result per envelope, in order."""
        ...

    async def close(self) -> None: ...
