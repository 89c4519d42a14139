"""Retention of an account's personal data after termination (issue 5).

Contract: at termination the customer gets its data back (restitution export), then the platform deletes the
account's personal data three months later (GDPR art. 5(1)(e), storage limitation). "Three months" is calendar
months: terminated on 30 November, purged from 28 February (the day is clamped to the month's length)."""

from __future__ import annotations

import calendar
from datetime import datetime

PURGE_AFTER_MONTHS = 3


def months_before(when: datetime, months: int) -> datetime:
    index = when.year * 12 + (when.month - 1) - months
    year, month = divmod(index, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)


def months_after(when: datetime, months: int) -> datetime:
    return months_before(when, -months)


def purge_due_at(terminated_at: datetime) -> datetime:
    return months_after(terminated_at, PURGE_AFTER_MONTHS)


def purge_due(terminated_at: datetime | None, now: datetime) -> bool:
    return terminated_at is not None and now >= purge_due_at(terminated_at)
