"""GSM-7 / UCS-2 detection and segment counting, from known examples (GSM 03.38; STANDARDS.md §5–6)."""

from __future__ import annotations

import pytest

from sender.sms_encoding import (
    _GSM_BASIC,
    GSM_BASIC,
    GSM_EXTENSION,
    SmsBodyError,
    SmsEncoding,
    SmsEncodingReport,
    analyse_sms,
    check_sms_body,
    compose_marketing_sms,
)

GSM = SmsEncoding.GSM7
UCS2 = SmsEncoding.UCS2


def test_the_basic_table_has_the_128_code_points_of_gsm_03_38() -> None:
    assert len(_GSM_BASIC) == 128
    assert _GSM_BASIC.index("@") == 0x00
    assert _GSM_BASIC.index("é") == 0x05
    assert _GSM_BASIC.index("Ç") == 0x09  # capital C cedilla is in the table; lowercase ç is not
    assert _GSM_BASIC.index("\x1b") == 0x1B
    assert _GSM_BASIC.index("É") == 0x1F
    assert _GSM_BASIC.index("¡") == 0x40
    assert _GSM_BASIC.index("§") == 0x5F
    assert _GSM_BASIC.index("¿") == 0x60
    assert _GSM_BASIC.index("à") == 0x7F
    assert len(GSM_BASIC) == 127  # minus the escape
    assert set("\f^{}\\[~]|€") == GSM_EXTENSION


@pytest.mark.parametrize("ch", list("éèàùÉìòÄÖÑÜäöñüÅåØøÆæßΔΩ@£$¥§¿¡"))
def test_characters_of_the_default_alphabet_stay_gsm(ch: str) -> None:
    assert analyse_sms(f"Promo {ch}") == SmsEncodingReport(GSM, 7, 1)


@pytest.mark.parametrize("ch", [*"çêâîôûëïÈÀÙÊÂÎÔÛœ«»’…–`", "\u00a0"])
def test_french_characters_outside_the_table_switch_to_ucs2(ch: str) -> None:
    report = analyse_sms(f"Promo {ch}")
    assert report.encoding is UCS2
    assert report.characters == 7
    assert report.non_gsm == (ch,)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", SmsEncodingReport(GSM, 0, 0)),
        ("a" * 160, SmsEncodingReport(GSM, 160, 1)),
        ("a" * 161, SmsEncodingReport(GSM, 161, 2)),
        ("a" * 306, SmsEncodingReport(GSM, 306, 2)),
        ("a" * 307, SmsEncodingReport(GSM, 307, 3)),
        ("é" * 160, SmsEncodingReport(GSM, 160, 1)),  # accents of the table cost nothing extra
        ("€" * 80, SmsEncodingReport(GSM, 160, 1)),  # extension characters count double
        ("€" * 81, SmsEncodingReport(GSM, 162, 2)),
        ("a" * 159 + "€", SmsEncodingReport(GSM, 161, 2)),
        ("ç" * 70, SmsEncodingReport(UCS2, 70, 1, ("ç",))),
        ("ç" * 71, SmsEncodingReport(UCS2, 71, 2, ("ç",))),
        ("ç" * 134, SmsEncodingReport(UCS2, 134, 2, ("ç",))),
        ("ç" * 135, SmsEncodingReport(UCS2, 135, 3, ("ç",))),
        ("🙂" * 35, SmsEncodingReport(UCS2, 70, 1, ("🙂",))),  # an emoji is a surrogate pair: 2 units
        ("🙂" * 36, SmsEncodingReport(UCS2, 72, 2, ("🙂",))),
        # in UCS-2 the extension characters are ordinary code units again
        ("€" * 69 + "ç", SmsEncodingReport(UCS2, 70, 1, ("ç",))),
    ],
)
def test_segment_counts_of_known_bodies(body: str, expected: SmsEncodingReport) -> None:
    assert analyse_sms(body) == expected


def test_an_escape_pair_is_not_split_across_parts() -> None:
    # 152 septets then "€" (2 septets): the pair would straddle the 153-septet boundary, so it opens part 2;
    # 152 + 2 + 152 = 306 septets still need 3 parts instead of 2.
    body = "a" * 152 + "€" + "a" * 152
    report = analyse_sms(body)
    assert report.characters == 306
    assert report.segments == 3


def test_a_surrogate_pair_is_not_split_across_parts() -> None:
    body = "ç" * 66 + "🙂" + "ç" * 66  # 66 + 2 + 66 = 134 units, but the emoji cannot sit on the boundary
    report = analyse_sms(body)
    assert report.characters == 134
    assert report.segments == 3


def test_one_non_gsm_character_switches_the_whole_message() -> None:
    body = "Soldes d'été chez Dupont : -30% sur tout le magasin jusqu'à dimanche."
    assert analyse_sms(body).encoding is GSM
    assert analyse_sms(body).segments == 1
    switched = body.replace("magasin", "magasin (même en ligne)") + " " + "x" * 30
    report = analyse_sms(switched)
    assert report.encoding is UCS2
    assert report.non_gsm == ("ê",)
    assert report.segments == 2  # it would have fitted one GSM-7 segment


def test_typographic_apostrophe_is_reported_as_the_culprit() -> None:
    report = analyse_sms("Aujourd’hui seulement, ça démarre")
    assert report.non_gsm == ("’", "ç")


def test_check_refuses_bodies_over_the_segment_limit() -> None:
    assert check_sms_body("a" * 306, max_segments=2).segments == 2
    with pytest.raises(SmsBodyError) as info:
        check_sms_body("ç" * 135, max_segments=2)
    assert info.value.report.segments == 3
    assert info.value.limit == 2
    assert "UCS-2" in str(info.value)


def test_check_refuses_more_than_1600_characters_and_empty_bodies() -> None:
    with pytest.raises(SmsBodyError, match="1600"):
        check_sms_body("a" * 1601, max_segments=20)
    assert check_sms_body("a" * 1600, max_segments=11).segments == 11
    with pytest.raises(SmsBodyError, match="empty"):
        check_sms_body("  \n ")


def test_compose_adds_sender_name_and_opt_out_mention() -> None:
    text = compose_marketing_sms("-20% ce week-end !", "Boulangerie Martin", "STOP au 36180")
    assert text == "Boulangerie Martin: -20% ce week-end !\nSTOP au 36180"
    assert analyse_sms(text).encoding is GSM


def test_compose_does_not_duplicate_what_the_author_wrote() -> None:
    body = "BOULANGERIE martin : -20% ce week-end ! stop  au 36180"
    assert compose_marketing_sms(body, "Boulangerie Martin", "STOP au 36180") == body


def test_compose_uses_the_account_opt_out_mention() -> None:
    text = compose_marketing_sms("Nouveautés en boutique", "Maison Léa", "STOP au 36111")
    assert text.endswith("\nSTOP au 36111")
    assert text.startswith("Maison Léa: ")


@pytest.mark.parametrize(("name", "mention"), [("", "STOP au 36180"), ("Martin", "  ")])
def test_compose_refuses_missing_sender_or_mention(name: str, mention: str) -> None:
    with pytest.raises(ValueError, match="required"):
        compose_marketing_sms("Promo", name, mention)
