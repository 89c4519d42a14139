"""Retry policy in one place: exponential back-off with full jitter and a cap, and a maximum age after which a
transient failure becomes final."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 30.0
    cap_s: float = 3600.0
    max_age_s: float = 24 * 3600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Delay before the next try, after `attempts` tries so far (>= 1). Jitter spreads a burst of deferrals."""
        ceiling: float = min(self.cap_s, self.base_s * 2.0 ** min(max(0, attempts - 1), 60))
        r: float = (rng or random).random()
        return ceiling / 2 + r * ceiling / 2

    def expired(self, queued_at: datetime, now: datetime) -> bool:
        return now - queued_at >= timedelta(seconds=self.max_age_s)
