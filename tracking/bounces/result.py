"""Value types of the asynchronous bounce parser."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BounceKind(StrEnum):
    """What `envoi bounces classify` prints (issue 4): the four kinds the counters and the contract use."""

    HARD = "hard"  # the address itself is permanently undeliverable
    SOFT = "soft"  # any other failure (mailbox full, blocks aimed at us, expired retries, unknown cause)
    COMPLAINT = "complaint"  # ARF / JMRP / provider feedback report
    OTHER = "other"  # not a failure: auto-reply, delivery receipt, delay-only notice, unparseable input


class OtherReason(StrEnum):
    """Reasons for kinds that are not failures; failures carry a `guardrails.bounce_policy.Reason`."""

    AUTO_REPLY = "auto_reply"
    DELIVERED = "delivered"  # a DSN whose recipients were delivered / relayed / expanded
    DELAYED = "delayed"  # a warning: the MTA is still retrying
    READ_RECEIPT = "read_receipt"  # RFC 8098 MDN
    NOT_A_BOUNCE = "not_a_bounce"
    MALFORMED = "malformed_input"


@dataclass(frozen=True, slots=True)
class Correlation:
    """Hints that tie a report to the message we sent, cheapest exact signal first (VERP, our header, Message-ID).

    Values are extracted, never verified: the caller checks the VERP signature against its key.
    """

    verp_local: str | None = None  # "b.<base36 id>.<signature>" from the address the report was sent to
    envoi_ref: str | None = None  # the X-Envoi-Ref header of the returned original
    message_id: str | None = None  # the returned original's Message-ID, with angle brackets


@dataclass(frozen=True, slots=True)
class BounceResult:
    kind: BounceKind
    recipient: str | None  # lower-cased failed (or complaining) address
    status: str | None  # RFC 3463 enhanced status "5.1.1", when the report gives or implies one
    reason: str  # a guardrails Reason value, an OtherReason value, or "complaint:<feedback type>"
    detector: str  # which detector recognised the message (for debugging the corpus)
    diagnostic: str | None = None  # the remote server's words, when found
    correlation: Correlation = Correlation()

    def as_json_dict(self, file: str) -> dict[str, str | None]:
        return {"file": file, "recipient": self.recipient, "kind": self.kind.value, "status": self.status,
                "reason": self.reason}
