"""Quiet hours for marketing SMS (STANDARDS.md §5): Mon–Sat 08:00–20:00 Europe/Paris, no Sundays/holidays."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from crm.domain import MessageKind
from guardrails.sms_window import (
    DEFAULT_WINDOW,
    SATURDAY,
    SUNDAY,
    LooserWindowError,
    SmsWindow,
    SmsWindowError,
    is_allowed,
    may_send,
    next_allowed,
    release_at,
)

PARIS = ZoneInfo("Europe/Paris")


def paris(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=PARIS)


@dataclass
class FakeClock:
    """A controllable clock: the tests move time, nothing sleeps."""

    now: datetime

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# --- the window itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "allowed"),
    [
        (paris(2026, 11, 26, 7, 59, 59), False),  # Thursday, before opening
        (paris(2026, 11, 26, 8, 0), True),  # opening is inclusive
        (paris(2026, 11, 26, 19, 59, 59), True),
        (paris(2026, 11, 26, 20, 0), False),  # closing is exclusive
        (paris(2026, 11, 28, 19, 59), True),  # Saturday evening, still open
        (paris(2026, 11, 28, 20, 0), False),
        (paris(2026, 11, 29, 12, 0), False),  # Sunday
        (paris(2026, 7, 14, 12, 0), False),  # Bastille Day, a Tuesday
        (paris(2026, 4, 6, 12, 0), False),  # Easter Monday
        (paris(2026, 4, 7, 12, 0), True),
    ],
)
def test_window_opens_mon_sat_8_to_20_paris_except_holidays(at: datetime, allowed: bool) -> None:
    assert is_allowed(at) is allowed


def test_the_window_is_judged_in_paris_time_whatever_the_input_zone() -> None:
    # 06:30 UTC in November is 07:30 in Paris (CET, UTC+1): closed; 07:00 UTC is 08:00 Paris: open.
    assert not is_allowed(datetime(2026, 11, 26, 6, 30, tzinfo=UTC))
    assert is_allowed(datetime(2026, 11, 26, 7, 0, tzinfo=UTC))


def test_saturday_evening_is_held_until_monday_morning() -> None:
    assert next_allowed(paris(2026, 11, 28, 19, 59)) == paris(2026, 11, 28, 19, 59)
    assert next_allowed(paris(2026, 11, 28, 20, 0)) == paris(2026, 11, 30, 8, 0)
    assert next_allowed(paris(2026, 11, 29, 10, 0)) == paris(2026, 11, 30, 8, 0)


def test_bastille_day_is_skipped() -> None:
    # Monday 13 July 2026 after closing → Tuesday 14 July is a public holiday → Wednesday 08:00.
    assert next_allowed(paris(2026, 7, 13, 20, 30)) == paris(2026, 7, 15, 8, 0)


def test_easter_weekend_holds_until_tuesday() -> None:
    # Saturday 4 April 2026 evening → Sunday → Easter Monday 6 April → Tuesday 7 April 08:00.
    assert next_allowed(paris(2026, 4, 4, 21, 0)) == paris(2026, 4, 7, 8, 0)


def test_next_allowed_before_opening_is_the_same_morning() -> None:
    assert next_allowed(paris(2026, 11, 26, 3, 0)) == paris(2026, 11, 26, 8, 0)


def test_spring_forward_weekend_reopens_at_8_local_summer_time() -> None:
    # DST starts Sunday 29 March 2026: Monday 08:00 is CEST (UTC+2), i.e. 06:00 UTC, not 07:00.
    slot = next_allowed(datetime(2026, 3, 28, 19, 30, tzinfo=UTC))  # Saturday 20:30 CET
    assert slot.astimezone(UTC) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)
    assert slot.astimezone(PARIS).time() == time(8, 0)


def test_fall_back_weekend_reopens_at_8_local_winter_time() -> None:
    # DST ends Sunday 25 October 2026: Monday 08:00 is CET (UTC+1), i.e. 07:00 UTC.
    slot = next_allowed(datetime(2026, 10, 24, 18, 30, tzinfo=UTC))  # Saturday 20:30 CEST
    assert slot.astimezone(UTC) == datetime(2026, 10, 26, 7, 0, tzinfo=UTC)


def test_an_opening_inside_the_dst_gap_becomes_a_real_instant() -> None:
    # A (hypothetical) window opening at 02:30 every day: on 29 March 2026, 02:30 does not exist in Paris.
    window = SmsWindow(start=time(2, 30), days=frozenset(range(7)), public_holidays_closed=False)
    slot = next_allowed(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), window)  # 01:30 CET
    assert slot.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # = 03:30 CEST
    assert is_allowed(slot, window)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_allowed(datetime(2026, 11, 26, 12, 0))
    with pytest.raises(ValueError, match="aware"):
        next_allowed(datetime(2026, 11, 26, 12, 0))


# --- transactional exemption ---------------------------------------------------------------------------


def test_transactional_sms_are_exempt_from_quiet_hours() -> None:
    sunday_night = paris(2026, 11, 29, 23, 0)
    assert may_send(MessageKind.TRANSACTIONAL, sunday_night)
    assert release_at(MessageKind.TRANSACTIONAL, sunday_night) is None
    assert not may_send(MessageKind.MARKETING, sunday_night)
    assert release_at(MessageKind.MARKETING, sunday_night) == paris(2026, 11, 30, 8, 0)


def test_marketing_inside_the_window_goes_now() -> None:
    assert release_at(MessageKind.MARKETING, paris(2026, 11, 26, 12, 0)) is None


# --- per-account overrides: stricter only --------------------------------------------------------------


def test_an_account_may_narrow_hours_and_days() -> None:
    window = DEFAULT_WINDOW.restricted(
        start=time(9, 0), end=time(18, 0), days={0, 1, 2, 3, 4}, extra_closed_dates={date(2026, 11, 27)}
    )
    assert not is_allowed(paris(2026, 11, 26, 8, 30), window)
    assert is_allowed(paris(2026, 11, 26, 9, 0), window)
    assert not is_allowed(paris(2026, 11, 26, 18, 0), window)
    # Thursday after closing → Friday 27 closed by the account → Saturday closed → Monday 09:00.
    assert next_allowed(paris(2026, 11, 26, 18, 0), window) == paris(2026, 11, 30, 9, 0)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"start": time(7, 0)}, "start"),
        ({"end": time(21, 0)}, "end"),
        ({"days": {SATURDAY, SUNDAY}}, "days"),
        ({"public_holidays_closed": False}, "public_holidays_closed"),
        ({"timezone": "America/New_York"}, "timezone"),
    ],
)
def test_a_looser_override_is_refused_naming_the_field(override: dict[str, object], field: str) -> None:
    with pytest.raises(LooserWindowError) as info:
        DEFAULT_WINDOW.restricted(**override)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_an_empty_or_inverted_window_is_a_configuration_error() -> None:
    with pytest.raises(SmsWindowError) as info:
        DEFAULT_WINDOW.restricted(start=time(19, 0), end=time(9, 0))
    assert info.value.field == "end"
    with pytest.raises(SmsWindowError) as info:
        DEFAULT_WINDOW.restricted(days=set())
    assert info.value.field == "days"


# --- a simulated week: held, then sent -----------------------------------------------------------------


def test_a_week_of_marketing_sms_is_held_then_sent_never_dropped() -> None:
    """One marketing SMS requested every 15 minutes from Friday 10 July 2026 00:00 to Thursday 16 00:00.

    Friday/Saturday/Monday/Wednesday are open (08:00–20:00); Sunday 12 and Tuesday 14 July (Bastille Day)
    are closed. A dispatcher driven by the fake clock sends what is due at each tick.
    """
    clock = FakeClock(paris(2026, 7, 10))
    end = paris(2026, 7, 16, 12, 0)
    pending: list[tuple[datetime, datetime]] = []  # (created, release slot)
    sent: list[tuple[datetime, datetime]] = []  # (created, sent at)
    immediate = 0
    while clock.now <= end:
        if clock.now < paris(2026, 7, 16):
            slot = release_at(MessageKind.MARKETING, clock.now)
            if slot is None:
                immediate += 1
                sent.append((clock.now, clock.now))
            else:
                pending.append((clock.now, slot))
        due = [p for p in pending if p[1] <= clock.now]
        for created, slot in due:
            assert slot == clock.now  # released at the first tick of the slot, not later
            sent.append((created, clock.now))
        pending = [p for p in pending if p[1] > clock.now]
        clock.advance(timedelta(minutes=15))

    assert not pending
    assert len(sent) == 6 * 96  # nothing dropped
    assert immediate == 4 * 48  # 12 open hours x 4 open days
    assert all(is_allowed(at) for _, at in sent)  # nothing ever sent outside the window
    releases = Counter(at for created, at in sent if created != at)
    assert releases == {
        paris(2026, 7, 10, 8): 32,  # Friday 00:00–07:45
        paris(2026, 7, 11, 8): 48,  # Friday evening + Saturday night
        paris(2026, 7, 13, 8): 144,  # Saturday evening, Sunday, Monday night
        paris(2026, 7, 15, 8): 144,  # Monday evening, Bastille Day, Wednesday night
        paris(2026, 7, 16, 8): 16,  # Wednesday evening
    }
    worst_hold = max(at - created for created, at in sent)
    assert worst_hold == timedelta(hours=36)  # Saturday 20:00 → Monday 08:00
