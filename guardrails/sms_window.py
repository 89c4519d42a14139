"""SMS quiet hours: when a marketing SMS may be handed to the carrier.

Pure: stdlib, `holidays` (a pure data library) and `crm.domain` only.

Why this window (STANDARDS.md §5, "SMS hours"): sources conflict (the AF2M charter allows working days
08:00–22:00), so the platform default is the common French practice and the safe one — Monday to Saturday,
08:00–20:00 Europe/Paris, never on Sundays nor on French public holidays. A message outside the window is
**held until the next allowed slot, never dropped** (issue 6); callers ask `release_at` when to send it.
Accounts may narrow the window (fewer hours, fewer days, extra closed dates) but never widen it: the
contract's rules (Annex 1, obligation 5, "comply with the law") are a floor for every account.

Transactional SMS (a one-time code, an order confirmation) are not prospecting under CPCE L34-5:
they are exempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

from crm.domain import MessageKind

MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = range(7)

# How far `next_allowed` looks ahead: a window that opens less than once a year is a configuration error.
_MAX_DAYS_AHEAD = 400


class SmsWindowError(ValueError):
    """Root of this module's errors: bad quiet-hours configuration."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class LooserWindowError(SmsWindowError):
    """A per-account override tried to widen the platform's window (only stricter is allowed)."""


@dataclass(frozen=True, slots=True)
class SmsWindow:
    """Hours during which marketing SMS may be sent: [start, end) local time on `days`, minus closed dates."""

    timezone: str = "Europe/Paris"
    start: time = time(8, 0)
    end: time = time(20, 0)  # exclusive: 20:00:00 is already closed
    days: frozenset[int] = frozenset({MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY})
    public_holidays_closed: bool = True
    holiday_country: str = "FR"
    extra_closed_dates: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SmsWindowError("timezone", f"sms window: unknown timezone {self.timezone!r}") from exc
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise SmsWindowError("start", "sms window: start/end are local wall-clock times, without tzinfo")
        if not self.start < self.end:
            # Overnight windows would allow night-time prospecting; nobody needs them.
            raise SmsWindowError("end", f"sms window: end ({self.end}) must be after start ({self.start})")
        if not self.days:
            raise SmsWindowError("days", "sms window: at least one day must be open")
        if not self.days <= frozenset(range(7)):
            raise SmsWindowError(
                "days", f"sms window: days must be weekday numbers 0-6, got {sorted(self.days)}"
            )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def restricted(
        self,
        *,
        start: time | None = None,
        end: time | None = None,
        days: Iterable[int] | None = None,
        extra_closed_dates: Iterable[date] = (),
        timezone: str | None = None,
        public_holidays_closed: bool | None = None,
    ) -> SmsWindow:
        """This window narrowed by a per-account override; anything looser raises `LooserWindowError`."""
        if timezone is not None and timezone != self.timezone:
            # Another zone shifts the hours rather than narrowing them: refuse instead of guessing.
            raise LooserWindowError(
                "timezone", f"sms window override 'timezone' ({timezone}) differs from {self.timezone}"
            )
        if public_holidays_closed is False and self.public_holidays_closed:
            raise LooserWindowError(
                "public_holidays_closed",
                "sms window override 'public_holidays_closed' cannot reopen public holidays",
            )
        new_start = self.start if start is None else start
        new_end = self.end if end is None else end
        new_days = self.days if days is None else frozenset(days)
        if new_start < self.start:
            raise LooserWindowError(
                "start", f"sms window override 'start' ({new_start}) is earlier than allowed ({self.start})"
            )
        if new_end > self.end:
            raise LooserWindowError(
                "end", f"sms window override 'end' ({new_end}) is later than allowed ({self.end})"
            )
        if not new_days <= self.days:
            extra = sorted(new_days - self.days)
            raise LooserWindowError("days", f"sms window override 'days' opens days {extra} that are closed")
        return SmsWindow(
            timezone=self.timezone,
            start=new_start,
            end=new_end,
            days=new_days,
            public_holidays_closed=self.public_holidays_closed,
            holiday_country=self.holiday_country,
            extra_closed_dates=self.extra_closed_dates | frozenset(extra_closed_dates),
        )

    def is_open_day(self, day: date) -> bool:
        if day.weekday() not in self.days or day in self.extra_closed_dates:
            return False
        return not (self.public_holidays_closed and day in _public_holidays(self.holiday_country, day.year))


DEFAULT_WINDOW = SmsWindow()


@lru_cache(maxsize=64)
def _public_holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year).keys())


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        # A naive time is ambiguous across DST changes; refuse rather than assume a zone.
        raise ValueError(f"sms window: an aware datetime is required, got naive {at.isoformat()}")


def _local(day: date, wall: time, tz: ZoneInfo) -> datetime:
    # Round-trip through UTC so that a wall time inside a DST gap becomes a real instant.
    return datetime.combine(day, wall, tzinfo=tz).astimezone(UTC).astimezone(tz)


def is_allowed(at: datetime, window: SmsWindow = DEFAULT_WINDOW) -> bool:
    """True when a marketing SMS may be handed over at `at` (an aware datetime)."""
    _require_aware(at)
    local = at.astimezone(window.tz)
    if not window.is_open_day(local.date()):
        return False
    return _local(local.date(), window.start, window.tz) <= at < _local(local.date(), window.end, window.tz)


def next_allowed(at: datetime, window: SmsWindow = DEFAULT_WINDOW) -> datetime:
    """`at` itself when allowed, otherwise the next opening of the window (aware, in the window's zone)."""
    _require_aware(at)
    tz = window.tz
    local = at.astimezone(tz)
    day = local.date()
    for _ in range(_MAX_DAYS_AHEAD):
        if window.is_open_day(day):
            opens = _local(day, window.start, tz)
            closes = _local(day, window.end, tz)
            if at < opens:
                return opens
            if at < closes:
                return local
        day += timedelta(days=1)
    raise SmsWindowError("days", f"sms window: no allowed slot within {_MAX_DAYS_AHEAD} days of {at}")


def release_at(kind: MessageKind, at: datetime, window: SmsWindow = DEFAULT_WINDOW) -> datetime | None:
    """When a message of `kind` created at `at` may go: None means now; otherwise hold it until then.

    Transactional SMS are exempt from quiet hours (they are not prospecting, CPCE L34-5).
    """
    _require_aware(at)
    if kind is MessageKind.TRANSACTIONAL:
        return None
    slot = next_allowed(at, window)
    return None if slot == at else slot


def may_send(kind: MessageKind, at: datetime, window: SmsWindow = DEFAULT_WINDOW) -> bool:
    """True when a message of `kind` may be handed over at `at`."""
    return release_at(kind, at, window) is None
