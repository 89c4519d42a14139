"""Normalising SMS contacts' numbers to E.164 (issue 6): mobiles accepted, the rest refused with a reason."""

from __future__ import annotations

import pytest

from crm.phones import PhoneNumberError, PhoneRejection, normalize_mobile


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("06 12 34 56 78", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("0612345678", "+33612345678"),
        ("+33 6 12 34 56 78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("  07 81 23 45 67 ", "+33781234567"),
        ("+262 692 12 34 56", "+262692123456"),  # La Réunion mobile, written internationally
        ("+32 470 12 34 56", "+32470123456"),  # Belgian mobile
        ("+1 650 253 0000", "+16502530000"),  # North America: FIXED_LINE_OR_MOBILE is accepted
    ],
)
def test_mobile_numbers_are_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalize_mobile(raw) == e164


def test_the_default_region_can_be_changed() -> None:
    assert normalize_mobile("0470 12 34 56", default_region="BE") == "+32470123456"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", PhoneRejection.UNPARSABLE),
        ("abc", PhoneRejection.UNPARSABLE),
        ("12", PhoneRejection.INVALID),
        ("07 00 00 00 00", PhoneRejection.INVALID),
        ("0692123456", PhoneRejection.INVALID),  # a Réunion mobile read as metropolitan: no such number
        ("01 23 45 67 89", PhoneRejection.NOT_MOBILE),  # Paris landline
        ("09 70 12 34 56", PhoneRejection.NOT_MOBILE),  # VoIP
        ("08 00 12 34 56", PhoneRejection.NOT_MOBILE),  # toll-free
    ],
)
def test_invalid_and_non_mobile_numbers_are_refused_with_a_reason(raw: str, reason: PhoneRejection) -> None:
    with pytest.raises(PhoneNumberError) as info:
        normalize_mobile(raw)
    assert info.value.reason is reason
    assert info.value.raw == raw
    assert str(reason) in str(info.value)


def test_the_error_is_a_value_error_that_names_the_kind_of_number() -> None:
    with pytest.raises(ValueError, match="fixed-line number cannot receive SMS"):
        normalize_mobile("01 23 45 67 89")
