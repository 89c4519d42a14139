"""Phone numbers of SMS contacts, normalised to E.164 at import (issue 6, "Sending").

Refusing landlines and invalid numbers at import, with a reason the CRM can show, is cheaper than letting
Twilio refuse them one by one at send time (21211 invalid "To", 21614 not a mobile number) — and those
refusals would count as delivery failures against the account (contract Annex 1, obligation 3 and the 10 %
rule). Uses `phonenumbers` (Google's libphonenumber metadata); French numbers written nationally
("06 12 34 56 78") are read in the default region FR.
"""

from __future__ import annotations

from enum import StrEnum

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

DEFAULT_REGION = "FR"

# FIXED_LINE_OR_MOBILE: regions such as the US/Canada do not tell the two apart in their numbering plan;
# refusing them would refuse every North American mobile.
_SMS_CAPABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


class PhoneRejection(StrEnum):
    UNPARSABLE = "unparsable"  # not a phone number at all
    INVALID = "invalid"  # shaped like one, but no such number in the numbering plan
    NOT_MOBILE = "not_mobile"  # a valid landline, VoIP, premium-rate... number: cannot receive SMS


class PhoneNumberError(ValueError):
    """A number refused for SMS; `reason` says why, `raw` is what was given."""

    def __init__(self, raw: str, reason: PhoneRejection, detail: str) -> None:
        super().__init__(f"phone number {raw!r} refused ({reason}): {detail}")
        self.raw = raw
        self.reason = reason
        self.detail = detail


def normalize_mobile(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """The E.164 form ("+33612345678") of a mobile number, or `PhoneNumberError`."""
    text = raw.strip()
    if not text:
        raise PhoneNumberError(raw, PhoneRejection.UNPARSABLE, "empty")
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        raise PhoneNumberError(raw, PhoneRejection.UNPARSABLE, str(exc)) from exc
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError(raw, PhoneRejection.INVALID, "not a valid number for its region")
    kind = phonenumbers.number_type(number)
    if kind not in _SMS_CAPABLE:
        name = _TYPE_NAMES.get(kind, str(kind))
        raise PhoneNumberError(raw, PhoneRejection.NOT_MOBILE, f"a {name} number cannot receive SMS")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


_TYPE_NAMES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "fixed-line",
    PhoneNumberType.TOLL_FREE: "toll-free",
    PhoneNumberType.PREMIUM_RATE: "premium-rate",
    PhoneNumberType.SHARED_COST: "shared-cost",
    PhoneNumberType.VOIP: "VoIP",
    PhoneNumberType.PERSONAL_NUMBER: "personal",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "UAN",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.UNKNOWN: "unknown-type",
}
