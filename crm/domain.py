"""Domain types of Envoi: enums and small value objects.

Pure: no I/O library is imported here (see docs/architecture.md, "Dependencies point inward").
Both the SQL adapters (`crm.schema`, `crm.repos`) and the rules (`guardrails`) speak these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class BillingState(StrEnum):
    CURRENT = "current"
    OVERDUE = "overdue"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class MessageKind(StrEnum):
    """Marketing messages need consent (CPCE L34-5); transactional ones do not, but still honour suppression."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class ConsentStatus(StrEnum):
    NONE = "none"
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


class LegalBasis(StrEnum):
    """French legal bases for electronic prospecting (CNIL): opt-in by default."""

    OPT_IN = "opt_in"
    SOFT_OPT_IN = "soft_opt_in"
    B2B = "b2b"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SENDING = "sending"  # fan-out running or messages still queued
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    DEFERRED = "deferred"  # transient failure, a retry is scheduled
    SENT = "sent"  # accepted by the next hop (relay or MX)
    FAILED = "failed"  # permanent failure, or retries exhausted
    HELD = "held"  # account suspended: kept, not dropped
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"  # stopped by the gate just before hand-off

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.CANCELLED, MessageStatus.SUPPRESSED})

PENDING_STATUSES: frozenset[MessageStatus] = frozenset(
    {MessageStatus.QUEUED, MessageStatus.DEFERRED}
)


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"
    DISABLED = "disabled"  # three delivery failures (contract, Annex 1, obligation 3)
    ERASED = "erased"  # GDPR art. 17: a keyed hash stays so that a re-import cannot mail them
    MANUAL = "manual"


class SkipReason(StrEnum):
    """Why a contact of a campaign's audience got no message (the audience report)."""

    NO_ADDRESS = "no_address"
    NO_CONSENT = "no_consent"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    SUPPRESSED = "suppressed"
    # issue 5: the suppression's reason, so the report tells unsubscribed / bounced / complained apart
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # disabled after repeated delivery failures
    COMPLAINED = "complained"
    ERASED = "erased"


class EventType(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    HELD = "held"
    CANCELLED = "cancelled"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    # issue 4: machine opens (Apple MPP proxies, scanners, opens within seconds of delivery) and scanner clicks
    # are recorded apart so that the statistics and the guardrails count human engagement only.
    OPENED_MACHINE = "opened_machine"
    CLICKED_SCANNER = "clicked_scanner"
    DELIVERED = "delivered"  # issue 6: the carrier confirmed delivery (Twilio status callback "delivered")


@dataclass(frozen=True, slots=True)
class SenderProfile:
    """The sender identity the contract requires in every marketing message (Annex 1, obligation 1)."""

    legal_name: str
    postal_address: str
    phone: str
    from_email: str
    from_name: str = ""
    reply_to: str = ""
    sms_sender_id: str = ""

    def missing_fields(self) -> list[str]:
        required = {
            "legal_name": self.legal_name,
            "postal_address": self.postal_address,
            "phone": self.phone,
            "from_email": self.from_email,
        }
        return [name for name, value in required.items() if not value or not value.strip()]

    @property
    def is_complete(self) -> bool:
        return not self.missing_fields()


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the gate needs to know about one contact at hand-off time."""

    contact_id: int
    address: str
    consent: ConsentStatus
    suppressed: SuppressionReason | None = None
    attributes: dict[str, object] = field(default_factory=dict)
