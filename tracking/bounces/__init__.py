"""Asynchronous bounce and complaint parsing (issue 4): pure functions over `email.message.Message`."""

from __future__ import annotations

from tracking.bounces.parser import parse_bounce
from tracking.bounces.result import BounceKind, BounceResult, Correlation, OtherReason

__all__ = ["BounceKind", "BounceResult", "Correlation", "OtherReason", "parse_bounce"]
