"""The dispatcher's `BodyFilter` for tracking (a `sender.hooks.BodyFilter`, matched structurally): rewrites the
links of a campaign message to /c/<token> and adds the open pixel /o/<token>.

Per-person tracking can be switched off per account (`accounts.settings["tracking_per_person"] = false`): the
tokens then carry no message or contact, and only aggregate counts per campaign are kept.

Only the HTML part is rewritten (the port gives the HTML): links in the text part stay direct, so a reader of
the plain-text alternative is not tracked. Transactional messages (no campaign) are not tracked: they have no
link table and their recipients did not sign up for marketing measurement.

SQL runs here synchronously (the port is synchronous), but only when a campaign's URL is not yet in this
process's cache: once per campaign and URL — personalised URLs cost one small query per message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm.schema import accounts
from tracking import link_table
from tracking.rewrite import insert_pixel, rewrite_links, trackable_urls
from tracking.tokens import TrackingTokens

_SETTINGS_TTL_S = 60.0


def per_person_enabled(account_settings: Mapping[str, Any] | None) -> bool:
    return bool((account_settings or {}).get("tracking_per_person", True))


class TrackingBodyFilter:
    def __init__(self, engine: Engine, keys: Sequence[str], public_url: str, max_cached_urls: int = 10_000) -> None:
        self.engine = engine
        self.tokens = TrackingTokens(keys)
        self.public_url = public_url.rstrip("/")
        self.skip = (f"{self.public_url}/u/",)  # the unsubscribe link works as given (RFC 8058)
        self.max_cached_urls = max_cached_urls
        self._links: dict[int, dict[str, int]] = {}
        self._per_person: dict[int, tuple[bool, float]] = {}

    def html(self, html: str, message: Mapping[str, Any]) -> str:
        campaign_id = message.get("campaign_id")
        if not campaign_id or not html:
            return html
        account_id = int(message["account_id"])
        personal = self._personal(account_id)
        message_id = int(message["id"]) if personal else 0
        contact_id = int(message.get("contact_id") or 0) if personal else 0
        index = self._links.setdefault(int(campaign_id), {})
        unknown: list[str] = []

        def click(url: str) -> str | None:
            idx = index.get(url)
            if idx is None:
                unknown.append(url)
                return None
            return f"{self.public_url}/c/{self.tokens.click_token(account_id, message_id, campaign_id, idx)}"

        # One pass in the steady state (every URL of the campaign already in the link table); a URL seen for the
        # first time is added to the table (SQL), then the document is rewritten again.
        out = rewrite_links(html, click, self.skip)
        if unknown:
            index = self._indexes(int(campaign_id), trackable_urls(html, self.skip))
            out = rewrite_links(html, click, self.skip)
        pixel = self.tokens.open_token(account_id, message_id, int(campaign_id), contact_id)
        return insert_pixel(out, f"{self.public_url}/o/{pixel}")

    def _indexes(self, campaign_id: int, urls: list[str]) -> dict[str, int]:
        cache = self._links.setdefault(campaign_id, {})
        missing = [u for u in urls if u not in cache]
        if missing:
            if len(cache) + len(missing) > self.max_cached_urls:
                cache.clear()  # personalised URLs: keep memory bounded, the table stays the truth
            with self.engine.begin() as conn:
                cache.update(link_table.indexes(conn, campaign_id, missing))
        return cache

    def _personal(self, account_id: int) -> bool:
        cached = self._per_person.get(account_id)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts.c.settings).where(accounts.c.id == account_id)).first()
        value = per_person_enabled(row[0] if row else None)
        self._per_person[account_id] = (value, now + _SETTINGS_TTL_S)
        return value
