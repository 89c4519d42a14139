"""Query parameters of the suppression list (issue 5): who, when, how, which campaign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Query


class SuppressionFilters:
    """`Depends()` reads the parameters from this signature."""

    def __init__(
        self,
        channel: str | None = Query(None, pattern="^(email|sms)$"),
        reason: str | None = Query(None, max_length=20, description="unsubscribed, complained, disabled, erased"),
        source: str | None = Query(None, max_length=100, description="one-click, page, mailto, api, ..."),
        campaign_id: int | None = Query(None, ge=1, le=2**63 - 1),
        address: str | None = Query(None, max_length=320),
        since: datetime | None = Query(None, description="created at or after (ISO 8601)"),
        until: datetime | None = Query(None, description="created before (ISO 8601)"),
    ) -> None:
        self.values: dict[str, Any] = {"channel": channel, "reason": reason, "source": source,
                                       "campaign_id": campaign_id, "address": address, "since": since,
                                       "until": until}

    def as_kwargs(self) -> dict[str, Any]:
        return dict(self.values)
