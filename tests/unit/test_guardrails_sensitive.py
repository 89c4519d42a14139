"""Sensitive-data detectors (contract, Annex 1, "Obligations du Client" (iv)): tables of real-looking samples."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.sensitive import (
    SensitiveKind,
    iban_valid,
    luhn_valid,
    nir_key,
    nir_valid,
    scan_fields,
    scan_text,
)

CARD, IBAN, NIR = SensitiveKind.CARD_NUMBER, SensitiveKind.IBAN, SensitiveKind.NIR

# Network test numbers (as published by the card schemes / payment providers) in the ways people type them.
POSITIVES = [
    ("Ma carte : 4111 1111 1111 1111, exp 12/27", CARD, "4111 1111 1111 1111"),
    ("visa 4012888888881881", CARD, "4012888888881881"),
    ("CB 4970-1000-0000-0006 merci", CARD, "4970-1000-0000-0006"),
    ("5555 5555 5555 4444", CARD, "5555 5555 5555 4444"),
    ("mastercard 2223 0000 4840 0011", CARD, "2223 0000 4840 0011"),
    ("Amex 3782 822463 10005", CARD, "3782 822463 10005"),
    ("371449635398431", CARD, "371449635398431"),
    ("Diners 3056 930902 5904", CARD, "3056 930902 5904"),
    ("discover 6011111111111117.", CARD, "6011111111111117"),
    ("JCB 3530111333300000", CARD, "3530111333300000"),
    ("UnionPay 6200000000000005", CARD, "6200000000000005"),
    ("old visa 4222222222222", CARD, "4222222222222"),
    ("4111\u00a01111\u00a01111\u00a01111", CARD, "4111\u00a01111\u00a01111\u00a01111"),
    ("Tél. 06 12 34 56 78 4111111111111111", CARD, "4111111111111111"),  # glued to a phone number
    ("4111 1111 1111 1111 123", CARD, "4111 1111 1111 1111"),  # followed by a CVC
    ("IBAN : FR76 3000 6000 0112 3456 7890 189", IBAN, "FR76 3000 6000 0112 3456 7890 189"),
    ("FR7630006000011234567890189", IBAN, "FR7630006000011234567890189"),
    ("RIB FR14 2004 1010 0505 0001 3M02 606 (La Banque Postale)", IBAN, "FR14 2004 1010 0505 0001 3M02 606"),
    ("DE89 3704 0044 0532 0130 00", IBAN, "DE89 3704 0044 0532 0130 00"),
    ("GB82 WEST 1234 5698 7654 32", IBAN, "GB82 WEST 1234 5698 7654 32"),
    ("BE68 5390 0754 7034", IBAN, "BE68 5390 0754 7034"),
    ("NL91ABNA0417164300", IBAN, "NL91ABNA0417164300"),
    ("CH93 0076 2011 6238 5295 7", IBAN, "CH93 0076 2011 6238 5295 7"),
    ("ES91 2100 0418 4502 0005 1332", IBAN, "ES91 2100 0418 4502 0005 1332"),
    ("IT60 X054 2811 1010 0000 0123 456", IBAN, "IT60 X054 2811 1010 0000 0123 456"),
    ("NO93 8601 1117 947", IBAN, "NO93 8601 1117 947"),
    ("LC55 HEMM 0001 0001 0012 0012 0002 3015", IBAN, "LC55 HEMM 0001 0001 0012 0012 0002 3015"),
    ("N° sécu 2 55 08 14 168 025 38.", NIR, "2 55 08 14 168 025 38"),
    ("255081416802538", NIR, "255081416802538"),
    ("1 85 05 78 006 084 91", NIR, "1 85 05 78 006 084 91"),
    ("2550814168025 38", NIR, "2550814168025 38"),
    ("né à Ajaccio : 1 80 12 2A 045 123 56", NIR, "1 80 12 2A 045 123 56"),
    ("né à Bastia : 1 80 12 2B 045 123 83", NIR, "1 80 12 2B 045 123 83"),
]

# Ordinary numbers of a French CRM: none has a valid checksum *and* the shape of a sensitive value.
NEGATIVES = [
    "Appelez le 06 12 34 56 78 ou le +33 1 23 45 67 89",
    "0033612345678",
    "Commande n° 2024110512345678 du 26/11/2026",
    "69003 Lyon, 75008 Paris, 97400 Saint-Denis",
    "SIRET 443 061 841 00047 — SIREN 443 061 841",
    "SIRET 44306184100047",
    "EAN 3017620422003 (pâte à tartiner)",
    "horodatage 1732627200000",
    "4111 1111 1111 1112",  # Luhn-invalid
    "FR76 3000 6000 0112 3456 7890 188",  # mod-97 invalid
    "FR76 3000 6000 0112 3456 7890",  # too short for France
    "2 55 08 14 168 025 39",  # wrong NIR key
    "2 55 13 14 168 025 38",  # month 13 does not exist
    "ref4111111111111111",  # glued to a word: an identifier, not a typed card
    "Prix : 1 234 567,89 €",
    "Suivi colis 6A12345678901",
]


@pytest.mark.parametrize(("text", "kind", "raw"), POSITIVES)
def test_sensitive_values_are_found(text: str, kind: SensitiveKind, raw: str) -> None:
    findings = scan_text(text, "body")
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, raw)]
    digits = re.sub(r"[\s-]", "", raw).upper()
    masked = findings[0].masked
    assert digits not in masked and "*" in masked and len(masked) == len(digits)


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_numbers_are_not_reported(text: str) -> None:
    assert scan_text(text) == []


def test_corsica_keys_match_the_insee_rule() -> None:
    # INSEE: replace 2A by 19 and 2B by 18 before mod 97; i.e. 20xxxx minus 1,000,000 / 2,000,000.
    assert nir_key("180122A045123") == 97 - (1801220045123 - 1_000_000) % 97 == 56
    assert nir_key("180122B045123") == 97 - (1801220045123 - 2_000_000) % 97 == 83


def test_department_00_is_not_a_nir() -> None:
    body = "1801200045123"
    assert not nir_valid(body + f"{nir_key(body):02d}")


def test_fields_are_scanned_recursively_with_paths_and_line() -> None:
    row = {
        "email": "jean@example.fr",
        "phone": "06 12 34 56 78",
        "attributes": {"note": "iban FR7630006000011234567890189", "cards": ["rien", 4111111111111111]},
    }
    findings = scan_fields(row, line=12)
    assert [(f.field, f.kind, f.line) for f in findings] == [
        ("attributes.note", IBAN, 12),
        ("attributes.cards[1]", CARD, 12),
    ]
    assert findings[0].describe() == "line 12, field 'attributes.note': iban (FR76*******************0189)"


def test_two_values_in_one_text_are_both_found() -> None:
    text = "carte 5555 5555 5555 4444 et IBAN DE89370400440532013000 et sécu 255081416802538"
    assert [f.kind for f in scan_text(text)] == [CARD, IBAN, NIR]


# ---- properties: every generated valid value is found, masked, inside ordinary text


def with_luhn(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


visa16 = st.text("0123456789", min_size=14, max_size=14).map(lambda s: with_luhn("4" + s))


def spaced(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(visa16, st.sampled_from(["Carte ", "n° ", "", "CB: "]), st.sampled_from([" merci", ".", "", " exp 12/28"]))
def test_any_luhn_valid_visa_is_found_and_masked(number: str, before: str, after: str) -> None:
    for form in (number, spaced(number)):
        findings = scan_text(before + form + after)
        assert [(f.kind, f.masked[-4:]) for f in findings] == [(CARD, number[-4:])]
        assert number not in findings[0].masked


def iban_from(country: str, bban: str) -> str:
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


fr_iban = st.text("0123456789", min_size=23, max_size=23).map(lambda bban: iban_from("FR", bban))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(fr_iban)
def test_any_valid_french_iban_is_found_spaced_or_not(iban: str) -> None:
    assert iban_valid(iban)
    for form in (iban, spaced(iban)):
        findings = scan_text(f"Virement sur {form} svp")
        assert [f.kind for f in findings] == [IBAN]
        assert iban not in findings[0].masked


nir_body = st.builds(
    lambda sex, year, month, dept, rest: f"{sex}{year:02d}{month:02d}{dept}{rest}",
    st.sampled_from("12"),
    st.integers(0, 99),
    st.integers(1, 12),
    st.sampled_from(["75", "69", "2A", "2B", "13", "99"]),
    st.text("0123456789", min_size=6, max_size=6),
)


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(nir_body)
def test_any_nir_with_its_key_is_found_and_a_wrong_key_is_not(body: str) -> None:
    key = nir_key(body)
    good = f"{body}{key:02d}"
    bad = f"{body}{key % 97 + 1:02d}"
    assert [f.kind for f in scan_text(f"NIR {good}")] == [NIR]
    assert all(f.kind is not NIR for f in scan_text(f"NIR {bad}"))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.text(max_size=200))
def test_findings_never_leak_the_value(text: str) -> None:
    for finding in scan_text(text):
        raw = re.sub(r"[\s\u00a0\u202f-]", "", text[finding.start : finding.end]).upper()
        assert raw not in finding.masked
