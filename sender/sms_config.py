"""An account's SMS configuration: who the SMS come from, the name and opt-out mention they carry, the segment
limit and the quiet-hours window — read from `accounts.settings["sms"]` and checked against the platform.

Contract Annex 1, obligations 1 and 4 (sender identity, free opt-out) and CPCE L34-5: a marketing SMS names the
sender and says how to stop ("STOP au 36xxx", the short code depends on the aggregator, STANDARDS.md §5). The
account may be stricter than the platform (fewer segments, a narrower window), never looser.

Stored shape (all keys optional; `PUT /v1/account/sms-settings` writes it):
    {"messaging_service_sid": "MG…", "from": "+337…" | "MARTIN", "sender_name": "Boulangerie Martin",
     "opt_out_mention": "STOP au 36180", "max_segments": 3,
     "window": {"start": "09:00", "end": "19:00", "days": [0, 1, 2, 3, 4], "closed_dates": ["2026-12-24"]}}
The sender falls back to the sender profile's `sms_sender_id`, the name to the profile's from name / legal name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from typing import Any

from crm.domain import SenderProfile
from guardrails.sms_window import DEFAULT_WINDOW, SmsWindow, SmsWindowError
from sender.sms_transport import SmsSender


class SmsConfigError(ValueError):
    """A bad per-account SMS setting; `field` names it (for a 422 naming the field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class SmsPlatform:
    """The platform's limits and defaults (from `envoi.settings`)."""

    max_segments: int = 10
    opt_out_mention: str = ""  # default mention when an account sets none
    window: SmsWindow = DEFAULT_WINDOW


@dataclass(frozen=True, slots=True)
class SmsAccountConfig:
    sender: SmsSender | None  # None: the account cannot send SMS yet
    sender_name: str
    opt_out_mention: str
    max_segments: int
    window: SmsWindow

    def missing(self) -> list[str]:
        """The settings a marketing SMS campaign still needs, as field names."""
        out = []
        if self.sender is None:
            out.append("sms.from")
        if not self.sender_name.strip():
            out.append("sms.sender_name")
        if not self.opt_out_mention.strip():
            out.append("sms.opt_out_mention")
        return out


def _time(raw: Any, field: str) -> time:
    try:
        return time.fromisoformat(str(raw))
    except ValueError:
        raise SmsConfigError(field, f"{field}: expected HH:MM, got {raw!r}") from None


def _window(raw: Mapping[str, Any], platform: SmsWindow) -> SmsWindow:
    unknown = set(raw) - {"start", "end", "days", "closed_dates"}
    if unknown:
        raise SmsConfigError(f"sms.window.{sorted(unknown)[0]}", f"unknown window setting {sorted(unknown)[0]!r}")
    try:
        closed = [date.fromisoformat(str(d)) for d in raw.get("closed_dates") or ()]
    except ValueError:
        raise SmsConfigError("sms.window.closed_dates", "closed_dates: expected YYYY-MM-DD dates") from None
    days = raw.get("days")
    if days is not None and not (isinstance(days, list) and all(isinstance(d, int) for d in days)):
        raise SmsConfigError("sms.window.days", "days: expected a list of weekday numbers (0 = Monday)")
    try:
        return platform.restricted(
            start=_time(raw["start"], "sms.window.start") if raw.get("start") else None,
            end=_time(raw["end"], "sms.window.end") if raw.get("end") else None,
            days=days, extra_closed_dates=closed,
        )
    except SmsWindowError as exc:
        raise SmsConfigError(f"sms.window.{exc.field}", str(exc)) from None


def account_sms_config(raw: Mapping[str, Any] | None, profile: SenderProfile | None,
                       platform: SmsPlatform) -> SmsAccountConfig:
    """The account's effective SMS configuration; `SmsConfigError` names the first bad setting."""
    raw = raw or {}
    service = str(raw.get("messaging_service_sid") or "").strip()
    from_ = str(raw.get("from") or (profile.sms_sender_id if profile else "") or "").strip()
    sender: SmsSender | None = None
    if service or from_:
        try:
            sender = SmsSender(messaging_service_sid=service, from_=from_)
        except ValueError as exc:
            raise SmsConfigError("sms.messaging_service_sid" if "messaging" in str(exc) else "sms.from",
                                 str(exc)) from None
    name = str(raw.get("sender_name") or "").strip()
    if not name and profile is not None:
        name = (profile.from_name or profile.legal_name).strip()
    mention = str(raw.get("opt_out_mention") or platform.opt_out_mention).strip()
    max_segments = raw.get("max_segments", platform.max_segments)
    if not isinstance(max_segments, int) or not 1 <= max_segments <= platform.max_segments:
        raise SmsConfigError("sms.max_segments",
                             f"max_segments must be an integer within 1..{platform.max_segments}, got {max_segments!r}")
    window = _window(raw.get("window") or {}, platform.window)
    return SmsAccountConfig(sender, name, mention, max_segments, window)
