"""Issue 5, pure parts: token rotation with retirement dates, language choice, address masking, the audience
report's skip reasons, the retention clock, the erasure hash, the mailto address parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm.address_hash import AddressHasher, is_hashed
from crm.domain import SkipReason
from guardrails.retention import months_after, months_before, purge_due
from guardrails.suppression_reasons import audience_skip_reason, skip_reason_for_suppression
from unsubscribe.i18n import mask, pick_language
from unsubscribe.mailto import claims_of, token_of
from unsubscribe.tokens import (
    PURPOSE_CLICK,
    PURPOSE_UNSUBSCRIBE,
    LinkClaims,
    LinkSigner,
    SigningKey,
    TokenError,
    key_set,
)

OLD = "old-key-0123456789-0123456789-0123456789"
NEW = "new-key-9876543210-9876543210-9876543210"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CLAIMS = LinkClaims(PURPOSE_UNSUBSCRIBE, 7, 42, 1001, 3)


def test_token_round_trips_and_any_changed_character_is_rejected() -> None:
    signer = LinkSigner([NEW])
    token = signer.sign(CLAIMS)
    assert signer.verify(token, PURPOSE_UNSUBSCRIBE) == CLAIMS
    for i in range(len(token)):
        forged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        with pytest.raises(TokenError):
            signer.verify(forged, PURPOSE_UNSUBSCRIBE)
    with pytest.raises(TokenError):
        signer.verify(token, PURPOSE_CLICK)  # a click token is not an unsubscribe token


def test_retired_key_verifies_during_its_window_then_stops() -> None:
    old_token = LinkSigner([OLD]).sign(CLAIMS)
    now = [T0 + timedelta(days=10)]
    signer = LinkSigner(key_set([NEW, OLD], [T0]), verify_for=timedelta(days=30), clock=lambda: now[0])
    assert signer.verify(old_token, PURPOSE_UNSUBSCRIBE) == CLAIMS  # 10 days after retirement: still valid
    assert LinkSigner([NEW]).verify(signer.sign(CLAIMS), PURPOSE_UNSUBSCRIBE) == CLAIMS  # signs with the new key
    now[0] = T0 + timedelta(days=31)
    with pytest.raises(TokenError):
        signer.verify(old_token, PURPOSE_UNSUBSCRIBE)


def test_a_key_without_retirement_date_verifies_forever_and_all_retired_cannot_sign() -> None:
    old_token = LinkSigner([OLD]).sign(CLAIMS)
    far = datetime(2040, 1, 1, tzinfo=UTC)
    assert LinkSigner([NEW, OLD], clock=lambda: far).verify(old_token, PURPOSE_UNSUBSCRIBE) == CLAIMS
    with pytest.raises(TokenError):
        LinkSigner([SigningKey(OLD, T0)], clock=lambda: far).sign(CLAIMS)


@pytest.mark.parametrize(("explicit", "header", "expected"), [
    (None, "en-US,en;q=0.9,fr;q=0.8", "en"),
    (None, "fr-FR,fr;q=0.9,en;q=0.8", "fr"),
    (None, "de-DE,de;q=0.9,en;q=0.5", "en"),
    (None, "en;q=0.2, fr;q=0.7", "fr"),
    (None, "de", "fr"),
    (None, "", "fr"),
    (None, "en;q=0, fr", "fr"),
    ("en", "fr-FR", "en"),
    ("xx", "en", "en"),
])
def test_language_comes_from_the_switch_then_accept_language(explicit: str | None, header: str,
                                                             expected: str) -> None:
    assert pick_language(explicit, header) == expected


def test_mask_hides_the_local_part() -> None:
    assert mask("jeanne.martin@example.fr") == "j***@example.fr"


@pytest.mark.parametrize(("reason", "expected"), [
    ("unsubscribed", SkipReason.UNSUBSCRIBED), ("complained", SkipReason.COMPLAINED),
    ("disabled", SkipReason.BOUNCED), ("erased", SkipReason.ERASED), ("manual", SkipReason.SUPPRESSED),
    (None, SkipReason.SUPPRESSED),
])
def test_suppression_reason_maps_to_the_audience_report_reason(reason: str | None, expected: SkipReason) -> None:
    assert skip_reason_for_suppression(reason) is expected
    assert audience_skip_reason(SkipReason.SUPPRESSED, reason) is expected


def test_non_suppression_skip_reasons_are_kept() -> None:
    assert audience_skip_reason(SkipReason.NO_CONSENT, "unsubscribed") is SkipReason.NO_CONSENT
    assert audience_skip_reason(SkipReason.CONSENT_WITHDRAWN, None) is SkipReason.CONSENT_WITHDRAWN


def test_purge_is_due_three_calendar_months_after_termination() -> None:
    terminated = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert months_after(terminated, 3) == datetime(2027, 2, 28, 12, tzinfo=UTC)
    assert months_before(datetime(2027, 2, 28, 12, tzinfo=UTC), 3) == datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert not purge_due(terminated, datetime(2027, 2, 28, 11, 59, tzinfo=UTC))
    assert purge_due(terminated, datetime(2027, 2, 28, 12, tzinfo=UTC))
    assert not purge_due(None, datetime(2030, 1, 1, tzinfo=UTC))


def test_erasure_hash_is_keyed_normalised_and_marked() -> None:
    a = AddressHasher("k" * 32)
    assert a.hash("email", " Jeanne@Example.FR ") == a.hash("email", "jeanne@example.fr")
    assert is_hashed(a.hash("email", "jeanne@example.fr"))
    assert a.hash("email", "jeanne@example.fr") != AddressHasher("x" * 32).hash("email", "jeanne@example.fr")
    assert a.hash("email", "x@y.fr") != a.hash("sms", "x@y.fr")
    rotated = AddressHasher("n" * 32, previous=["k" * 32])
    assert a.hash("email", "x@y.fr") in rotated.candidates("email", ["x@y.fr"])


def test_mailto_token_is_the_sub_address_of_our_mailbox() -> None:
    signer = LinkSigner([NEW])
    token = signer.sign(CLAIMS)
    box = "unsubscribe@u.envoi.fr"
    assert token_of(f"<unsubscribe+{token}@U.Envoi.fr>", box) == token
    assert token_of("unsubscribe@u.envoi.fr", box) is None
    assert token_of(f"other+{token}@u.envoi.fr", box) is None
    assert claims_of(f"unsubscribe+{token}@u.envoi.fr", box, signer) == CLAIMS
    assert claims_of(f"unsubscribe+{token[:-2]}xx@u.envoi.fr", box, signer) is None
