"""SMS encoding and segment counting (3GPP TS 23.038 / GSM 03.38, TS 23.040 concatenation).

A body made only of characters of the GSM 7-bit default alphabet (plus its extension table, whose characters
cost an escape septet each) is sent as GSM-7: 160 septets in one SMS, 153 per part when concatenated (the
user-data header takes 7). One character outside that set switches the *whole* message to UCS-2: 70 UTF-16
code units in one SMS, 67 per part — so an emoji (a surrogate pair) counts 2. STANDARDS.md §5–6.

French matters here: é è à ù É are GSM; ç (lowercase), ê â î ô û ë ï, « », and the typographic apostrophe
’ are not, and one of them costs a campaign up to 2.3x the segments.

Pure: no I/O. Also composes marketing SMS so that they always carry the sender's name and the opt-out mention
(contract Annex 1, obligations 1 and 4; CPCE L34-5: "STOP au 36xxx").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 default alphabet, in code order 0x00–0x7F (0x1B is the escape to the extension table, not a char).
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM_BASIC: frozenset[str] = frozenset(_GSM_BASIC) - {"\x1b"}
# Extension table (ESC + code): form feed, ^ { } \ [ ~ ] | €. Each costs two septets.
GSM_EXTENSION: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM_SINGLE_LIMIT = 160
GSM_PART_LIMIT = 153
UCS2_SINGLE_LIMIT = 70
UCS2_PART_LIMIT = 67
MAX_BODY_CHARACTERS = 1600  # Twilio's limit on `Body` (Messages resource)
DEFAULT_MAX_SEGMENTS = 10


class SmsEncoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class SmsEncodingReport:
    encoding: SmsEncoding
    characters: int  # units the limits apply to: GSM septets (extension = 2) or UTF-16 code units
    segments: int
    non_gsm: tuple[str, ...] = ()  # the characters that forced UCS-2, in order of first appearance


class SmsBodyError(ValueError):
    """A body that may not be sent: too long, or over the account's segment limit."""

    def __init__(self, message: str, report: SmsEncodingReport, limit: int) -> None:
        super().__init__(message)
        self.report = report
        self.limit = limit


def _units(ch: str, encoding: SmsEncoding) -> int:
    if encoding is SmsEncoding.GSM7:
        return 2 if ch in GSM_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1  # astral plane characters are UTF-16 surrogate pairs


def _segments(body: str, encoding: SmsEncoding, total: int) -> int:
    if encoding is SmsEncoding.GSM7:
        single, part = GSM_SINGLE_LIMIT, GSM_PART_LIMIT
    else:
        single, part = UCS2_SINGLE_LIMIT, UCS2_PART_LIMIT
    if total <= single:
        return 1 if total else 0
    # Handsets do not split an escape sequence or a surrogate pair across parts: pack greedily, as the
    # carriers (and Twilio's segment calculator) do, so a 2-unit character at a boundary opens a new part.
    segments, used = 1, 0
    for ch in body:
        units = _units(ch, encoding)
        if used + units > part:
            segments += 1
            used = 0
        used += units
    return segments


def analyse_sms(body: str) -> SmsEncodingReport:
    """Encoding, counted characters and segments of `body` as it will travel."""
    non_gsm = tuple(dict.fromkeys(ch for ch in body if ch not in GSM_BASIC and ch not in GSM_EXTENSION))
    encoding = SmsEncoding.UCS2 if non_gsm else SmsEncoding.GSM7
    total = sum(_units(ch, encoding) for ch in body)
    return SmsEncodingReport(encoding, total, _segments(body, encoding, total), non_gsm)


def check_sms_body(body: str, max_segments: int = DEFAULT_MAX_SEGMENTS) -> SmsEncodingReport:
    """`analyse_sms`, refusing empty bodies, bodies over 1,600 characters and over `max_segments` parts."""
    report = analyse_sms(body)
    if not body.strip():
        raise SmsBodyError("sms body is empty", report, max_segments)
    if len(body) > MAX_BODY_CHARACTERS:
        message = f"sms body has {len(body)} characters, the maximum is {MAX_BODY_CHARACTERS}"
        raise SmsBodyError(message, report, MAX_BODY_CHARACTERS)
    if report.segments > max_segments:
        hint = f" (UCS-2 because of {''.join(report.non_gsm)!r})" if report.non_gsm else ""
        message = f"sms body needs {report.segments} segments{hint}, the limit is {max_segments}"
        raise SmsBodyError(message, report, max_segments)
    return report


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def compose_marketing_sms(body: str, sender_name: str, opt_out_mention: str) -> str:
    """The body with the sender's name in front and the opt-out mention at the end, unless already there.

    Contract Annex 1: clear sender identity (obligation 1) and a free opt-out (obligation 4; for SMS,
    "reply STOP"). The check is case- and whitespace-insensitive so an author who already wrote them is
    not charged a second copy.
    """
    name = sender_name.strip()
    mention = opt_out_mention.strip()
    if not name:
        raise ValueError("compose_marketing_sms: sender_name is required for a marketing SMS")
    if not mention:
        raise ValueError("compose_marketing_sms: opt_out_mention is required for a marketing SMS")
    text = body.strip()
    if _normalised(name) not in _normalised(text):
        text = f"{name}: {text}"
    if _normalised(mention) not in _normalised(text):
        text = f"{text}\n{mention}"
    return text
