"""Every Redis key and stream name Envoi uses, in one place.

Cluster-ready: each key carries a hash tag ({q<partition>} or {a<account>}), and no command ever touches
keys of two different tags, so the same code runs on a Redis Cluster (see docs/architecture.md)."""

from __future__ import annotations

PREFIX = "envoi"
GROUP = "dispatch"  # the consumer group of every dispatch stream


def partition_of(account_id: int, partitions: int) -> int:
    return account_id % partitions


def stream(partition: int, priority: str) -> str:
    """Dispatch stream of one partition; priority is "tx" (transactional, read first) or "bulk"."""
    return f"{PREFIX}:{{q{partition}}}:{priority}"


def retry_zset(partition: int) -> str:
    """Deferred messages of a partition: member = stream fields as a compact string, score = due time."""
    return f"{PREFIX}:{{q{partition}}}:retry"


def done_bitmap(partition: int, message_id: int) -> tuple[str, int]:
    """Idempotency guard: bit set once a message was accepted by the next hop (chunks of 2^20 ids)."""
    return f"{PREFIX}:{{q{partition}}}:done:{message_id >> 20}", message_id & 0xFFFFF


def account_status(account_id: int) -> str:
    """Cached account status ("active" / "suspended" / ...), read by workers before every batch."""
    return f"{PREFIX}:{{a{account_id}}}:status"


def suppression_set(account_id: int, channel: str) -> str:
    """Addresses suppressed since the last batch load: checked just before hand-off (unsubscribe effect)."""
    return f"{PREFIX}:{{a{account_id}}}:suppressed:{channel}"


def fanout_lock(campaign_id: int) -> str:
    return f"{PREFIX}:{{c{campaign_id}}}:fanout-lock"


def epoch() -> str:
    """Present while Redis holds the queue; when it is missing Redis lost its data: reconcile from the ledger."""
    return f"{PREFIX}:{{meta}}:epoch"


def reconcile_lock() -> str:
    return f"{PREFIX}:{{meta}}:reconcile-lock"


def counter(campaign_id: int) -> str:
    """Per-campaign counters hash (sent, failed, deferred...), fast path for statistics and guardrails."""
    return f"{PREFIX}:{{c{campaign_id}}}:counters"
