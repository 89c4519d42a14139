"""Per-account SMS configuration (stricter only) and the reply keywords of the Twilio webhooks (issue 6)."""

from __future__ import annotations

from datetime import date, time

import pytest

from crm.domain import SenderProfile
from sender.sms_config import SmsConfigError, SmsPlatform, account_sms_config
from tracking.twilio_webhooks import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, failure_class, keyword

PROFILE = SenderProfile("Boulangerie Martin SARL", "1 rue de la Paix, 69001 Lyon", "+33 4 00 00 00 00",
                        "news@martin.fr", from_name="Boulangerie Martin", sms_sender_id="MARTIN")
PLATFORM = SmsPlatform(max_segments=6, opt_out_mention="STOP au 36180")


def test_defaults_come_from_the_profile_and_the_platform() -> None:
    c = account_sms_config({}, PROFILE, PLATFORM)
    assert c.sender is not None and c.sender.from_ == "MARTIN" and c.sender.rate_key == "MARTIN"
    assert (c.sender_name, c.opt_out_mention, c.max_segments, c.missing()) == (
        "Boulangerie Martin", "STOP au 36180", 6, [])


def test_nothing_configured_names_what_is_missing() -> None:
    c = account_sms_config({}, None, SmsPlatform())
    assert c.missing() == ["sms.from", "sms.sender_name", "sms.opt_out_mention"]


def test_a_narrower_window_and_fewer_segments_are_accepted() -> None:
    c = account_sms_config({"messaging_service_sid": "MG" + "a" * 32, "max_segments": 2,
                            "window": {"start": "09:30", "end": "19:00", "days": [0, 1, 2, 3, 4],
                                       "closed_dates": ["2026-12-24"]}}, PROFILE, PLATFORM)
    assert c.sender is not None and c.sender.rate_key == "MG" + "a" * 32
    assert (c.window.start, c.window.end, sorted(c.window.days)) == (time(9, 30), time(19, 0), [0, 1, 2, 3, 4])
    assert date(2026, 12, 24) in c.window.extra_closed_dates and c.max_segments == 2


@pytest.mark.parametrize(("raw", "field"), [
    ({"window": {"start": "07:00"}}, "sms.window.start"),
    ({"window": {"end": "21:00"}}, "sms.window.end"),
    ({"window": {"days": [6]}}, "sms.window.days"),  # Sunday stays closed
    ({"window": {"hours": 3}}, "sms.window.hours"),
    ({"max_segments": 7}, "sms.max_segments"),  # above the platform's cap
    ({"from": "not a sender!"}, "sms.from"),
    ({"messaging_service_sid": "MG123"}, "sms.messaging_service_sid"),
])
def test_anything_looser_or_malformed_is_refused_naming_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(SmsConfigError) as exc:
        account_sms_config(raw, PROFILE, PLATFORM)
    assert exc.value.field == field


@pytest.mark.parametrize("body", ["STOP", " stop ", "Stop Sms", "ARRÊT", "arret", "  Unsubscribe\n", "QUIT",
                                  "end", "cancel", "STOPALL", "stop\tsms"])
def test_opt_out_keywords_any_case_trimmed(body: str) -> None:
    assert keyword(body) in OPT_OUT_KEYWORDS


@pytest.mark.parametrize("body", ["STOP please", "arrêtez", "stopper", "", "Bonjour"])
def test_other_replies_are_not_keywords(body: str) -> None:
    assert keyword(body) not in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS


def test_failure_classes_of_twilio_error_codes() -> None:
    assert [failure_class(c) for c in (21211, 21614, 30005, 30006, 30007, 21610, 30003, None)] == [
        "recipient", "recipient", "recipient", "recipient", "policy", "unsubscribed", "other", "other"]
