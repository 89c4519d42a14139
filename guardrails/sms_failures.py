"""What an SMS delivery failure (a Twilio error code) counts for: the number, the account's rate, or nothing.

Contract, Annex 1, "Obligations du Client" (iii) — the 3-failure rule — applies to "e-mails/SMS/MMS" (BRIEF);
`guardrails.failures` is the rule, this module is its SMS input, as `guardrails.bounce_policy` is e-mail's
(STANDARDS.md §6, issue 6):

- `recipient`: 21211 (invalid 'To' number), 21614 (not a mobile number), 30005 (unknown destination handset),
  30006 (landline or unreachable carrier) — the number is bad: a delivery failure counted against it, whether
  Twilio refused it at message creation or reported it later in a status callback. 21211 / 21614 prove the
  number cannot receive SMS at all: the SMS analogue of "user unknown" (a stricter account may disable on it);
- `policy`: 30007 (carrier filtering) — a block about the *sender's* content or reputation: never counted
  against the number, but a final failure toward the account's failure rate ("Suspension" (ii));
- `unsubscribed`: 21610 — the recipient opted out at the carrier: the number is suppressed (not disabled);
- `transient`: 429 / 20429, queue overflow (21611, 30001) — retried; a retry schedule that runs out says
  nothing about the number either;
- `other`: anything else — a final failure for the rate, not evidence against the number.

Pure: stdlib and `guardrails.failures` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from guardrails import failures

INVALID_NUMBER = 21211
NOT_MOBILE = 21614
UNKNOWN_HANDSET = 30005
UNREACHABLE = 30006
CARRIER_FILTERED = 30007
UNSUBSCRIBED = 21610
RECIPIENT_CODES = frozenset({INVALID_NUMBER, NOT_MOBILE, UNKNOWN_HANDSET, UNREACHABLE})
NO_SUCH_NUMBER = frozenset({INVALID_NUMBER, NOT_MOBILE})  # the "user unknown" of SMS
TRANSIENT_CODES = frozenset({20429, 21611, 30001})
# A bare HTTP status (no Twilio code in the body) that `sender.twilio_errors` retries: our credentials,
# throttling, Twilio's own errors — never the number's fault.
TRANSIENT_HTTP = frozenset({401, 403, 408, 429})


class SmsFailureClass(StrEnum):
    RECIPIENT = "recipient"
    POLICY = "policy"
    UNSUBSCRIBED = "unsubscribed"
    TRANSIENT = "transient"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class SmsFailure:
    code: int | None
    failure_class: SmsFailureClass

    @property
    def counts_against_number(self) -> bool:
        return self.failure_class is SmsFailureClass.RECIPIENT

    @property
    def outcome(self) -> failures.Outcome:
        """The 3-failure rule's input for this final failure."""
        if not self.counts_against_number:
            return failures.NOT_COUNTED
        return failures.USER_UNKNOWN if self.code in NO_SUCH_NUMBER else failures.COUNTED


def classify_sms_failure(code: int | None) -> SmsFailure:
    if code in RECIPIENT_CODES:
        return SmsFailure(code, SmsFailureClass.RECIPIENT)
    if code == CARRIER_FILTERED:
        return SmsFailure(code, SmsFailureClass.POLICY)
    if code == UNSUBSCRIBED:
        return SmsFailure(code, SmsFailureClass.UNSUBSCRIBED)
    if code in TRANSIENT_CODES or code in TRANSIENT_HTTP or (code is not None and 500 <= code < 600):
        return SmsFailure(code, SmsFailureClass.TRANSIENT)
    return SmsFailure(code, SmsFailureClass.OTHER)


def counts_toward_failure_rate(code: int | None) -> bool:
    """A final SMS failure after a hand-off counts toward the mailing's failure rate, like every final e-mail
    failure does (hard, soft exhausted, policy blocks): recipient failures and carrier filtering (30007)
    explicitly, and any other final error. Only a failure Twilio never attempted because we are throttled is
    left out — it is not a final failure (it is retried)."""
    return classify_sms_failure(code).failure_class is not SmsFailureClass.TRANSIENT
