"""Detectors for data the platform must not store: payment card numbers, IBANs, French NIRs.

Contract, Annex 1, "Obligations du Client": the Client must not « utiliser la Solution pour soumettre,
collecter, traiter, utiliser ou stocker des numéros de carte de crédit ou de débit, des informations de
compte bancaire personnel ou des identifiants similaires, l'état de santé physique ou mentale ou d'autres
informations sensibles ».

Each detector needs a checksum to fire, so ordinary numbers (phone numbers, order ids, postcodes, SIRETs)
are not reported: cards are Luhn-valid 13–19 digit runs with a card-issuer prefix and card-like grouping;
IBANs are mod-97 valid with the registered length of their country; NIRs carry a valid key (mod 97, with
Corsica's 2A/2B). Findings never carry the value itself, only a masked form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class SensitiveKind(StrEnum):
    CARD_NUMBER = "card_number"
    IBAN = "iban"
    NIR = "nir"  # French social security number (numéro d'inscription au répertoire)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: SensitiveKind
    masked: str  # never the full value
    start: int  # offsets in the scanned text
    end: int
    field: str = ""
    line: int | None = None  # the import line, when scanning rows of a file

    def describe(self) -> str:
        where = f"line {self.line}, " if self.line is not None else ""
        return f"{where}field {self.field!r}: {self.kind.value.replace('_', ' ')} ({self.masked})"


# Separators people type inside long numbers: space, no-break spaces (French typography), dash.
_SEP = "[ \u00a0\u202f-]"
_SEP_RE = re.compile(_SEP)

# ---------------------------------------------------------------------------------------------- cards
# A run of digit groups joined by single separators, not glued to letters. Cards are looked for in every
# window of consecutive groups, so a card printed right after a phone number or before a CVC is still found.
_DIGIT_RUN_RE = re.compile(rf"(?<!\w)\d+(?:{_SEP}\d+)*(?!\w)")
_GROUP_RE = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """Issuer prefix and length of the payment networks (ISO/IEC 7812 IINs). Strict on purpose: French
    EAN-13 barcodes start with 3, SIRETs are 14 Luhn-valid digits, timestamps and order ids start with 1 or
    2 — none of them is a card length for its prefix."""
    n, two, three, four = len(digits), digits[:2], digits[:3], digits[:4]
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if "51" <= two <= "55" or "2221" <= four <= "2720":  # Mastercard
        return n == 16
    if two in {"34", "37"}:  # American Express
        return n == 15
    if two == "35":  # JCB
        return 16 <= n <= 19
    if two in {"36", "38", "39"} or "300" <= three <= "305":  # Diners Club
        return 14 <= n <= 19
    if digits[0] in "56":  # Maestro, Discover, UnionPay
        return 16 <= n <= 19 or (n in (13, 15) and two in {"50", "56", "57", "58", "67"})
    return False


# Printed groupings of real cards: 4-4-4-4(-3), 4-4-4-1/4-4-5 (13 digits), Amex 4-6-5, Diners 4-6-4.
_GROUPINGS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1), (4, 4, 5), (4, 6, 5), (4, 6, 4), (4, 4, 4, 2),
              (4, 4, 4, 3), (4, 4, 4, 4, 1), (4, 4, 4, 4, 2), (6, 13)}  # fmt: skip


def _card_grouping_ok(raw: str) -> bool:
    groups = tuple(len(g) for g in _SEP_RE.split(raw))
    return len(groups) == 1 or groups in _GROUPINGS


def is_card_number(raw: str) -> bool:
    digits = _SEP_RE.sub("", raw)
    return (
        digits.isdigit()
        and 13 <= len(digits) <= 19
        and _card_prefix_ok(digits)
        and _card_grouping_ok(raw)
        and luhn_valid(digits)
    )


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of card numbers: in each digit run, the longest valid window of whole groups, left to right."""
    for run in _DIGIT_RUN_RE.finditer(text):
        groups = [(g.start(), g.end()) for g in _GROUP_RE.finditer(text, run.start(), run.end())]
        i = 0
        while i < len(groups):
            found = None
            for j in range(len(groups) - 1, i - 1, -1):  # longest window first
                span = (groups[i][0], groups[j][1])
                if is_card_number(text[span[0] : span[1]]):
                    found = (j, span)
                    break
            if found is None:
                i += 1
                continue
            yield found[1]
            i = found[0] + 1


def mask_card(digits: str) -> str:
    return "*" * (len(digits) - 4) + digits[-4:]  # PCI DSS allows the last four to be shown


# ---------------------------------------------------------------------------------------------- IBAN
# ISO 13616 registry: country → IBAN length (French overseas territories use France's format).
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    "GF": 27, "GP": 27, "MQ": 27, "RE": 27, "PF": 27, "TF": 27, "YT": 27, "NC": 27, "PM": 27, "WF": 27,
    "BL": 27, "MF": 27,
}  # fmt: skip
_IBAN_MIN, _IBAN_MAX = 15, 34

# Candidate starts: a country code and two check digits, not glued to a preceding letter or digit.
_IBAN_START_RE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}")


def iban_valid(iban: str) -> bool:
    """ISO 13616 / ISO 7064 mod 97-10 on a compact upper-case IBAN."""
    if not (_IBAN_MIN <= len(iban) <= _IBAN_MAX) or not iban.isalnum() or not iban.isascii():
        return False
    country, check = iban[:2], iban[2:4]
    if not country.isalpha() or not check.isdigit() or check in {"00", "01", "99"}:
        return False
    expected = _IBAN_LENGTHS.get(country)
    if expected is not None and len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _iban_candidates(text: str, start: int) -> Iterator[tuple[str, int]]:
    """Compact forms growing from `start`, with the raw end offset, longest first; single separators only."""
    compact: list[str] = []
    ends: list[int] = []
    i = start
    while i < len(text) and len(compact) < _IBAN_MAX:
        ch = text[i]
        if ch.isascii() and ch.isalnum():
            compact.append(ch.upper())
            ends.append(i + 1)
            i += 1
        elif ch in " \u00a0\u202f" and i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isalnum():
            i += 1
        else:
            break
    for n in range(len(compact), _IBAN_MIN - 1, -1):
        end = ends[n - 1]
        # The match must end on a boundary: not in the middle of a word or of a longer number.
        if end < len(text) and text[end].isalnum():
            continue
        yield "".join(compact[:n]), end


def mask_iban(iban: str) -> str:
    return iban[:4] + "*" * (len(iban) - 8) + iban[-4:]


# ---------------------------------------------------------------------------------------------- NIR
# sex (1, 2; 3, 4, 7, 8 for provisional numbers) · year · month (01–12, 20–42 and 50–99 when unknown or
# provisional) · department (01–99, 2A, 2B) · commune · order · key; printed as 1 85 05 78 006 084 36.
_NIR_RE = re.compile(
    rf"(?<![\w])"
    rf"(?P<nir>[1-478]{_SEP}?\d\d{_SEP}?(?:0[1-9]|1[0-2]|[2-3]\d|4[0-2]|[5-9]\d){_SEP}?(?:\d\d|2[ABab])"
    rf"{_SEP}?\d\d\d{_SEP}?\d\d\d){_SEP}?(?P<key>\d\d)(?![\w])"
)


# Printed groupings: compact, 13 + key, the INSEE card's 1 85 05 78 006 084 36, or with commune+order joined.
_NIR_GROUPINGS = {(15,), (13, 2), (1, 2, 2, 2, 3, 3, 2), (1, 2, 2, 2, 6, 2)}


def nir_key(nir13: str) -> int:
    """97 - (NIR mod 97); Corsica's 2A and 2B count as 19 and 18 (INSEE)."""
    upper = nir13.upper()
    numeric = upper[:5] + upper[5:7].replace("2A", "19").replace("2B", "18") + upper[7:]
    return 97 - int(numeric) % 97


def nir_valid(compact: str) -> bool:
    if len(compact) != 15 or not compact[13:].isdigit():
        return False
    body = compact[:13]
    if not (body[:5] + body[7:]).isdigit() or not (body[5:7].isdigit() or body[5:7].upper() in {"2A", "2B"}):
        return False
    return body[5:7] != "00" and nir_key(body) == int(compact[13:])


def mask_nir(compact: str) -> str:
    return compact[0] + "*" * (len(compact) - 1)


# ---------------------------------------------------------------------------------------------- scans
def _iban_findings(text: str, field: str, line: int | None) -> Iterator[Finding]:
    for m in _IBAN_START_RE.finditer(text):
        for compact, end in _iban_candidates(text, m.start()):
            if iban_valid(compact):
                yield Finding(SensitiveKind.IBAN, mask_iban(compact), m.start(), end, field, line)
                break


def _card_findings(text: str, field: str, line: int | None) -> Iterator[Finding]:
    for start, end in _card_spans(text):
        digits = _SEP_RE.sub("", text[start:end])
        yield Finding(SensitiveKind.CARD_NUMBER, mask_card(digits), start, end, field, line)


def _nir_findings(text: str, field: str, line: int | None) -> Iterator[Finding]:
    pos = 0
    while (m := _NIR_RE.search(text, pos)) is not None:
        raw = m.group()
        compact = _SEP_RE.sub("", raw)
        grouping = tuple(len(g) for g in _SEP_RE.split(raw))
        if grouping in _NIR_GROUPINGS and nir_valid(compact):
            yield Finding(SensitiveKind.NIR, mask_nir(compact), m.start(), m.end(), field, line)
            pos = m.end()
        else:
            pos = m.start() + 1  # overlapping: a rejected match must not hide one starting inside it


def scan_text(text: str, field: str = "", line: int | None = None) -> list[Finding]:
    """All sensitive values in `text`, in order of position, masked.

    An IBAN's account number may itself contain a Luhn-valid run of digits: inside an IBAN, the IBAN
    (country, length and mod-97 all agree) is the finding, not a card or a NIR.
    """
    ibans = list(_iban_findings(text, field, line))
    others = [*_card_findings(text, field, line), *_nir_findings(text, field, line)]
    findings = ibans + [f for f in others if not any(f.start < i.end and i.start < f.end for i in ibans)]
    return sorted(findings, key=lambda f: (f.start, f.kind))


def _walk(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        yield path, str(value)  # a card number stored as a JSON number is still a card number
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def scan_fields(fields: Mapping[str, object], line: int | None = None) -> list[Finding]:
    """Scan every string (and integer) value of a mapping, nested mappings and lists included.

    Field names are dotted paths (`attributes.bank.iban`, `notes[2]`) so that an import can name them.
    """
    findings: list[Finding] = []
    for path, text in _walk(fields, ""):
        findings.extend(scan_text(text, path, line))
    return findings
