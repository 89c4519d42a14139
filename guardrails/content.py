"""Content checks when a template or a campaign is created: each problem is a `Violation` naming the field.

The API turns a non-empty list into a 422 and saves nothing (issue 3, rule 3). Clauses enforced, from the
contract, Annex 1, "Obligations du Client": every direct-marketing e-mail/SMS/MMS must « (i) contenir des
informations claires sur l'expéditeur, telles que les coordonnées, sous la forme de numéros de téléphone et
d'adresses, dans l'e-mail ou accessibles via un lien ; (ii) comporter une ligne d'objet qui n'est pas
susceptible d'induire le destinataire en erreur quant au contenu de l'e-mail ; … (iv) contenir un lien de
désinscription … (sans fournir de mots de passe et sans utiliser des fonctionnalités similaires) », and the
Client must not store « des numéros de carte de crédit ou de débit, des informations de compte bancaire
personnel ou des identifiants similaires » (checked by `guardrails.sensitive`).

Unsubscribe link: Envoi renders it itself (a signed, password-free link, plus the RFC 8058 headers). A
template either leaves it to us (no placeholder: we append the footer to both parts) or positions it with
`{{ unsubscribe_url }}` — then in *both* the HTML and the text part, because a part that names it nowhere
would be sent without it while its sibling decides the placement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from crm.domain import Channel, MessageKind, SenderProfile
from guardrails.sensitive import scan_text

UNSUBSCRIBE_PLACEHOLDER = "unsubscribe_url"


class ViolationCode(StrEnum):
    SUBJECT_EMPTY = "subject_empty"
    SUBJECT_FAKE_REPLY = "subject_fake_reply"  # Re:/Fwd:/TR: on a mailing that replies to nothing
    SUBJECT_ALL_CAPS = "subject_all_caps"
    SUBJECT_NO_WORDS = "subject_no_words"  # only punctuation, symbols or emoji
    SENDER_INCOMPLETE = "sender_incomplete"
    BODY_EMPTY = "body_empty"
    UNSUBSCRIBE_PLACEMENT = "unsubscribe_placement"  # placeholder in one part only
    UNSUBSCRIBE_UNKNOWN_PLACEHOLDER = "unsubscribe_unknown_placeholder"  # {{ unsubscribe_link }} etc.
    SENSITIVE_DATA = "sensitive_data"


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    code: ViolationCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code.value, "message": self.message}


# ------------------------------------------------------------------------------------------ subject
# Reply / forward markers of common mail clients: Re, Fwd/Fw, TR (French "transféré"), AW/WG (German),
# RV (Spanish), RIF (Italian); with an optional counter (Re[2]:) and French spacing before the colon.
# A short bracketed tag before it ("[Ext] RE:") fakes the same thing.
_FAKE_PREFIX_RE = re.compile(
    r"^\W*(?:\[[^\]]{0,20}\]\s*)?(?:re|fwd?|tr|aw|wg|rv|rif)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]", re.IGNORECASE
)
_PLACEHOLDER_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# Below this many letters, capitals are an acronym or a product code ("TV", "OK"), not shouting.
_MIN_LETTERS_FOR_CAPS = 4


def check_subject(subject: str, *, kind: MessageKind = MessageKind.MARKETING) -> list[Violation]:
    """Annex 1 (ii): a subject that does not mislead. Reply/forward prefixes are refused on marketing only:
    a transactional message may genuinely continue a conversation (a ticket reply)."""
    if not subject or not subject.strip():
        return [Violation("subject", ViolationCode.SUBJECT_EMPTY, "the subject is empty")]
    violations: list[Violation] = []
    if kind is MessageKind.MARKETING and _FAKE_PREFIX_RE.match(subject):
        violations.append(
            Violation(
                "subject",
                ViolationCode.SUBJECT_FAKE_REPLY,
                "the subject starts like a reply or a forward (Re:, Fwd:, TR: …) but a mailing answers nothing",
            )
        )
    if not any(ch.isalnum() for ch in subject):
        violations.append(Violation("subject", ViolationCode.SUBJECT_NO_WORDS, "the subject has no letters or digits"))
        return violations
    # Only letters that have a case count (placeholders aside): "SOLDES -50 % !!" is all capitals.
    visible = _PLACEHOLDER_RE.sub(" ", subject)
    cased = [ch for ch in visible if ch.lower() != ch.upper()]
    if len(cased) >= _MIN_LETTERS_FOR_CAPS and all(ch.isupper() for ch in cased):
        violations.append(
            Violation("subject", ViolationCode.SUBJECT_ALL_CAPS, "the subject is written only in capitals")
        )
    return violations


# ------------------------------------------------------------------------------------------ sender
def check_sender(sender: SenderProfile | None, *, channel: Channel = Channel.EMAIL) -> list[Violation]:
    """Annex 1 (i): the sender block needs the legal name, a postal address and a phone number (and a From
    address for e-mail)."""
    if sender is None:
        return [Violation("sender", ViolationCode.SENDER_INCOMPLETE, "no sender profile is configured")]
    missing = sender.missing_fields()
    if channel is Channel.SMS:
        missing = [name for name in missing if name != "from_email"]
    return [
        Violation(f"sender.{name}", ViolationCode.SENDER_INCOMPLETE, f"the sender block lacks {name.replace('_', ' ')}")
        for name in missing
    ]


# ------------------------------------------------------------------------------------------ unsubscribe
_UNSUB_RE = re.compile(r"\{\{\s*unsubscribe_url\s*(?:\|[^}]*)?\}\}")
_UNSUB_LOOKALIKE_RE = re.compile(r"\{\{\s*((?:un|de)sub\w*|desinscri\w*|désinscri\w*|optout\w*|opt_out\w*)")


def has_unsubscribe_placeholder(body: str) -> bool:
    return bool(_UNSUB_RE.search(body))


def check_unsubscribe(html: str | None, text: str | None) -> list[Violation]:
    """Annex 1 (iv): the unsubscribe link must be possible in every part we send."""
    parts = {"html": html or "", "text": text or ""}
    violations: list[Violation] = []
    for name, body in parts.items():
        for m in _UNSUB_LOOKALIKE_RE.finditer(body):
            if m.group(1) != UNSUBSCRIBE_PLACEHOLDER:
                violations.append(
                    Violation(
                        name,
                        ViolationCode.UNSUBSCRIBE_UNKNOWN_PLACEHOLDER,
                        f"unknown placeholder {m.group(1)!r}: the unsubscribe link is {{{{ unsubscribe_url }}}}",
                    )
                )
    present = [name for name, body in parts.items() if body.strip()]
    positioned = [name for name in present if has_unsubscribe_placeholder(parts[name])]
    if positioned and len(positioned) != len(present):
        missing = next(name for name in present if name not in positioned)
        violations.append(
            Violation(
                missing,
                ViolationCode.UNSUBSCRIBE_PLACEMENT,
                f"{{{{ unsubscribe_url }}}} is placed in the {positioned[0]} part but not in the {missing} part: "
                "place it in both, or in neither and Envoi appends it",
            )
        )
    return violations


def check_body(html: str | None, text: str | None, *, channel: Channel = Channel.EMAIL) -> list[Violation]:
    if (html or "").strip() or (text or "").strip():
        return []
    field = "text" if channel is Channel.SMS else "html"
    return [Violation(field, ViolationCode.BODY_EMPTY, "the message has no body")]


# ------------------------------------------------------------------------------------------ sensitive data
def check_sensitive(parts: dict[str, str | None]) -> list[Violation]:
    """Contract, Annex 1, "Obligations du Client" (iv): no card numbers, bank details or similar identifiers."""
    violations: list[Violation] = []
    for name, body in parts.items():
        for finding in scan_text(body or "", name):
            violations.append(
                Violation(
                    name,
                    ViolationCode.SENSITIVE_DATA,
                    f"the {name} contains a {finding.kind.value.replace('_', ' ')} ({finding.masked}); "
                    "such data must not be stored on the platform",
                )
            )
    return violations


# ------------------------------------------------------------------------------------------ whole checks
def check_template(
    *,
    subject: str | None,
    html: str | None,
    text: str | None,
    sender: SenderProfile | None,
    kind: MessageKind = MessageKind.MARKETING,
    channel: Channel = Channel.EMAIL,
) -> list[Violation]:
    """Every check of a template, in field order; an empty list means it may be saved.

    Transactional messages need no consent but still carry the sender block (L34-5 and the contract both
    require the sender not be hidden) and honour suppression; only the reply-prefix rule is marketing-only.
    """
    violations: list[Violation] = []
    if channel is Channel.EMAIL:
        violations += check_subject(subject or "", kind=kind)
    violations += check_sender(sender, channel=channel)
    violations += check_body(html, text, channel=channel)
    if channel is Channel.EMAIL:
        violations += check_unsubscribe(html, text)
    violations += check_sensitive({"subject": subject, "html": html, "text": text})
    return violations


def check_campaign(
    *,
    subject: str | None,
    html: str | None,
    text: str | None,
    sender: SenderProfile | None,
    channel: Channel = Channel.EMAIL,
) -> list[Violation]:
    """A campaign is a direct-marketing mailing: the template checks with `kind=MARKETING`."""
    return check_template(
        subject=subject, html=html, text=text, sender=sender, kind=MessageKind.MARKETING, channel=channel
    )
