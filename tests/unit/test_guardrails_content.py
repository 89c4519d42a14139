"""Content checks at template / campaign creation (contract, Annex 1, "Obligations du Client" (i), (ii), (iv))."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.domain import Channel, MessageKind, SenderProfile
from guardrails.content import (
    Violation,
    ViolationCode,
    check_campaign,
    check_sender,
    check_subject,
    check_template,
    check_unsubscribe,
)

SENDER = SenderProfile(
    legal_name="Boulangerie Martin SARL",
    postal_address="12 rue de la République, 69002 Lyon",
    phone="+33 4 78 00 00 00",
    from_email="news@boulangerie-martin.fr",
)
HTML = "<p>Bonjour {{ first_name }}, nos galettes sont arrivées !</p>"
TEXT = "Bonjour {{ first_name }}, nos galettes sont arrivées !"


def codes(violations: list[Violation]) -> list[ViolationCode]:
    return [v.code for v in violations]


@pytest.mark.parametrize(
    "subject",
    [
        "Nos galettes des rois sont arrivées",
        "Soldes d'hiver : -50 % sur tout le magasin",
        "{{ first_name }}, votre offre SNCF TGV",
        "Votre commande n° 1234",
        "🎉 Nouveautés de janvier",
        "OK",  # too short to be shouting
        "Réponse à vos questions sur la livraison",
        "Retour des beaux jours",
        "Trésors de Noël",
        "Fwd-thinking design: our new range",
    ],
)
def test_honest_subjects_pass(subject: str) -> None:
    assert check_subject(subject) == []


@pytest.mark.parametrize(
    ("subject", "code"),
    [
        ("", ViolationCode.SUBJECT_EMPTY),
        ("   ", ViolationCode.SUBJECT_EMPTY),
        ("Re: votre demande", ViolationCode.SUBJECT_FAKE_REPLY),
        ("RE : votre demande", ViolationCode.SUBJECT_FAKE_REPLY),
        ("re:suite à notre échange", ViolationCode.SUBJECT_FAKE_REPLY),
        ("Fwd: offre exclusive", ViolationCode.SUBJECT_FAKE_REPLY),
        ("Fw: offre exclusive", ViolationCode.SUBJECT_FAKE_REPLY),
        ("TR: Votre colis", ViolationCode.SUBJECT_FAKE_REPLY),
        ("Tr : Votre colis", ViolationCode.SUBJECT_FAKE_REPLY),
        ("Re[2]: on en parle ?", ViolationCode.SUBJECT_FAKE_REPLY),
        ("AW: Angebot", ViolationCode.SUBJECT_FAKE_REPLY),
        ("[Ext] RE: facture", ViolationCode.SUBJECT_FAKE_REPLY),
        ("!!!", ViolationCode.SUBJECT_NO_WORDS),
        ("?!… $$$ €€€", ViolationCode.SUBJECT_NO_WORDS),
        ("🎉🎉🎉", ViolationCode.SUBJECT_NO_WORDS),
        ("SOLDES MONSTRES -70 % !!!", ViolationCode.SUBJECT_ALL_CAPS),
        ("DERNIER JOUR {{ first_name }}", ViolationCode.SUBJECT_ALL_CAPS),
        ("ÉTÉ ÉTÉ", ViolationCode.SUBJECT_ALL_CAPS),
    ],
)
def test_misleading_subjects_are_refused(subject: str, code: ViolationCode) -> None:
    violations = check_subject(subject)
    assert code in codes(violations)
    assert all(v.field == "subject" and v.message for v in violations)


def test_reply_prefix_is_allowed_on_a_transactional_message() -> None:
    assert check_subject("Re: votre ticket #4521", kind=MessageKind.TRANSACTIONAL) == []


def test_incomplete_sender_names_each_missing_field() -> None:
    sender = SenderProfile(legal_name="Martin", postal_address=" ", phone="", from_email="a@b.fr")
    assert [v.field for v in check_sender(sender)] == ["sender.postal_address", "sender.phone"]
    assert codes(check_sender(None)) == [ViolationCode.SENDER_INCOMPLETE]


def test_sms_sender_needs_no_email_address_but_a_phone_and_address() -> None:
    sender = SenderProfile(legal_name="Martin", postal_address="Lyon", phone="0478000000", from_email="")
    assert check_sender(sender, channel=Channel.SMS) == []
    assert [v.field for v in check_sender(sender)] == ["sender.from_email"]


@pytest.mark.parametrize(
    ("html", "text", "expected"),
    [
        (HTML, TEXT, []),  # neither positions it: Envoi appends the footer to both parts
        (HTML + '<a href="{{ unsubscribe_url }}">Se désinscrire</a>', TEXT + "\n{{unsubscribe_url}}", []),
        (HTML + '<a href="{{ unsubscribe_url|e }}">x</a>', None, []),  # HTML-only template
        (HTML + '<a href="{{ unsubscribe_url }}">Se désinscrire</a>', TEXT, [("text", "unsubscribe_placement")]),
        (HTML, TEXT + " {{ unsubscribe_url }}", [("html", "unsubscribe_placement")]),
        (HTML + '<a href="{{ unsubscribe_link }}">x</a>', TEXT, [("html", "unsubscribe_unknown_placeholder")]),
        (HTML, TEXT + " {{ desinscription }}", [("text", "unsubscribe_unknown_placeholder")]),
    ],
)
def test_unsubscribe_placeholder_is_in_both_parts_or_neither(
    html: str | None, text: str | None, expected: list[tuple[str, str]]
) -> None:
    assert [(v.field, v.code.value) for v in check_unsubscribe(html, text)] == expected


def test_complete_campaign_passes() -> None:
    assert check_campaign(subject="Nos galettes", html=HTML, text=TEXT, sender=SENDER) == []


def test_campaign_collects_every_problem_with_its_field() -> None:
    violations = check_campaign(
        subject="TR: PROMO",
        html="<p>Payez avec la carte 4111 1111 1111 1111</p>",
        text="",
        sender=SenderProfile("Martin", "", "0478000000", "a@b.fr"),
    )
    assert [(v.field, v.code) for v in violations] == [
        ("subject", ViolationCode.SUBJECT_FAKE_REPLY),
        ("subject", ViolationCode.SUBJECT_ALL_CAPS),
        ("sender.postal_address", ViolationCode.SENDER_INCOMPLETE),
        ("html", ViolationCode.SENSITIVE_DATA),
    ]
    sensitive = violations[-1]
    assert "4111 1111 1111 1111" not in sensitive.message and "1111" in sensitive.message
    assert sensitive.as_dict()["code"] == "sensitive_data"


def test_template_without_body_is_refused() -> None:
    violations = check_template(subject="Bonjour", html="  ", text=None, sender=SENDER)
    assert codes(violations) == [ViolationCode.BODY_EMPTY]


def test_sms_template_skips_subject_and_unsubscribe_checks() -> None:
    sender = SenderProfile("Martin", "Lyon", "0478000000", "")
    assert check_template(subject=None, html=None, text="Galettes dispo !", sender=sender, channel=Channel.SMS) == []


def test_iban_in_a_transactional_template_is_refused() -> None:
    violations = check_template(
        subject="Votre facture",
        html=None,
        text="Réglez sur FR76 3000 6000 0112 3456 7890 189",
        sender=SENDER,
        kind=MessageKind.TRANSACTIONAL,
    )
    assert [(v.field, v.code) for v in violations] == [("text", ViolationCode.SENSITIVE_DATA)]


lower_words = st.text("abcdefghijklmnopqrstuvwxyzéèà ", min_size=1, max_size=40).filter(
    lambda s: any(c.isalpha() for c in s)
)


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(lower_words)
def test_subject_with_a_lowercase_letter_is_never_all_caps(subject: str) -> None:
    assert ViolationCode.SUBJECT_ALL_CAPS not in codes(check_subject(subject))
    assert ViolationCode.SUBJECT_ALL_CAPS in codes(check_subject(subject.upper())) or (
        sum(c.isalpha() for c in subject) < 4
    )


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(
    st.sampled_from(["Re", "RE", "re", "Fwd", "FWD", "Fw", "TR", "Tr"]),
    st.sampled_from([":", " :", " : "]),
    lower_words,
)
def test_any_reply_prefix_is_refused_on_a_campaign(prefix: str, colon: str, rest: str) -> None:
    assert ViolationCode.SUBJECT_FAKE_REPLY in codes(check_subject(prefix + colon + rest))
