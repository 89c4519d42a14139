"""Every Redis key and stream name Envoi uses, in one place.

Cluster-ready: each key carries a hash tag ({q<partition>} or {a<account>}), and no command ever touches
keys of two different tags, so the same code runs on a Redis Cluster (see docs/architecture.md)."""

from __future__ import annotations

import hashlib  # issue 5: inflight()

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


# --- issue 4 (feedback and tracking) ---------------------------------------------------------------------------
def campaign_domain_counters(campaign_id: int) -> str:
    """Per-campaign, per-recipient-domain counters hash: field `<metric>|<registrable domain>` (tracking.counters)."""
    return f"{PREFIX}:{{c{campaign_id}}}:domains"


def seen_bitmap(campaign_id: int, what: str, message_id: int) -> tuple[str, int]:
    """First-time guard for unique opens / clicks of a campaign's messages (chunks of 2^20 ids, like `done`)."""
    return f"{PREFIX}:{{c{campaign_id}}}:seen:{what}:{message_id >> 20}", message_id & 0xFFFFF


def tracking_hits() -> str:
    """Stream of open/click hits buffered by the API processes (issue 4): one entry per flush, field `h` = packed
    hits; consumed by the workers' `tracking` group into SQL events and the counters."""
    return f"{PREFIX}:{{trk}}:hits"


TRACKING_GROUP = "tracking"


# --- issue 7 (delivery engine: per-destination traffic shaping, shared by every worker process) -----------------
# One hash tag per destination ({d<key>}, the key being a provider such as "gmail" or an MX site), so every
# command of the shaper touches a single slot.
def shaping_bucket(destination: str) -> str:
    """Token bucket hash (tokens, ts) of a destination: messages per second shared by all workers."""
    return f"{PREFIX}:{{d{destination}}}:bucket"


def shaping_connections(destination: str) -> str:
    """Sorted set of connection leases to a destination (member = lease id, score = expiry, epoch s)."""
    return f"{PREFIX}:{{d{destination}}}:conns"


def shaping_state(destination: str) -> str:
    """Adaptive state hash of a destination: rate factor, connection factor, consecutive temporary failures."""
    return f"{PREFIX}:{{d{destination}}}:state"


def shaping_suspended(destination: str) -> str:
    """Present (with a TTL) while a destination is suspended after repeated temporary failures."""
    return f"{PREFIX}:{{d{destination}}}:suspended"


# --- issue 3 (guardrails: thresholds and suspension) -------------------------------------------------------------
def guardrail_counters(campaign_id: int) -> str:
    """Per-campaign guardrail counters hash: attempted, failed, delivered, blocklist citation, waived thresholds
    (sender.thresholds_monitor). Kept apart from `counter()` so that two slices never bump the same field."""
    return f"{PREFIX}:{{c{campaign_id}}}:guardrails"


def guardrail_window(account_id: int) -> str:
    """Transactional sends of an account, rolling 24 h window: hash of hourly buckets `<metric>:<hour>`."""
    return f"{PREFIX}:{{a{account_id}}}:guardrails:tx"


# --- issue 5 (unsubscribe: the hand-off fence) -------------------------------------------------------------------
# `suppression_set(account, channel)` above is a sorted set (member = address, score = epoch ms of the
# suppression), trimmed to the last day. Together with the in-flight sets below it closes the window between
# a dispatcher's batch load and its hand-off (see unsubscribe/fence.py).
def inflight(account_id: int, channel: str, address: str) -> str:
    """Set of message ids to `address` that passed the hand-off guard and whose hand-off has not ended yet
    (PEXPIRE lease, so a crashed worker cannot block an unsubscribe for longer than the lease)."""
    digest = hashlib.sha256(address.encode()).hexdigest()[:24]
    return f"{PREFIX}:{{a{account_id}}}:inflight:{channel}:{digest}"


def dnsbl_seen(account_id: int, zone: str, target: str) -> str:
    """A DNSBL listing of an account's domain already acted upon (so that a reinstated account is not suspended
    again for the same listing); expires when the listing has not been seen for 30 days."""
    return f"{PREFIX}:{{a{account_id}}}:dnsbl:{zone}:{target}"
