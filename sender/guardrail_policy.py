"""The effective guardrail policy of an account: contract defaults ← platform overrides ← the account's
`settings["guardrails"]` JSON (guardrails.policy.resolve_policy: never looser than the contract).

Read on every dispatch batch by the outcome sinks, so it is cached per process for a few seconds; a setting
changed through the admin API applies within `ttl_s`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from crm.schema import accounts
from guardrails.policy import GuardrailPolicy, PolicyError, resolve_policy

log = logging.getLogger(__name__)

SETTINGS_KEY = "guardrails"  # accounts.settings["guardrails"] = {setting: value}


def account_overrides(settings: Mapping[str, Any] | None) -> Mapping[str, object]:
    raw = (settings or {}).get(SETTINGS_KEY) or {}
    return raw if isinstance(raw, Mapping) else {}


def policy_for(conn: Connection, account_id: int, platform: Mapping[str, object]) -> GuardrailPolicy:
    row = conn.execute(select(accounts.c.settings).where(accounts.c.id == account_id)).first()
    overrides = account_overrides(row.settings if row else None)
    try:
        return resolve_policy(platform, overrides)
    except PolicyError as exc:
        # Stored settings are validated when written; one that no longer passes (a stricter contract bound
        # since) must not stop the guardrails: fall back to the platform policy and say so.
        log.warning("account %s: guardrail settings ignored: %s", account_id, exc)
        return resolve_policy(platform)


class PolicyCache:
    def __init__(self, engine: Engine, platform: Mapping[str, object], ttl_s: float = 5.0) -> None:
        self.engine = engine
        self.platform = dict(platform)
        self.ttl_s = ttl_s
        self._cache: dict[int, tuple[float, GuardrailPolicy]] = {}
        self._lock = threading.Lock()

    def get(self, account_id: int) -> GuardrailPolicy:
        """Blocking (SQL on a miss): call from a thread."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(account_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with self.engine.connect() as conn:
            policy = policy_for(conn, account_id, self.platform)
        with self._lock:
            self._cache[account_id] = (now, policy)
        return policy

    def forget(self, account_id: int) -> None:
        with self._lock:
            self._cache.pop(account_id, None)
