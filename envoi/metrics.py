"""Prometheus metrics, recorded from hooks (the dispatcher's observer port), never from business code."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("envoi_messages_total", "Messages by channel and outcome", ["channel", "outcome"])
QUEUE_DEPTH = Gauge("envoi_queue_depth", "Entries in the dispatch streams and the retry schedule", ["queue"])
QUEUE_PENDING = Gauge("envoi_queue_pending", "Entries claimed by a worker and not yet acknowledged")
HANDOFF = Histogram("envoi_send_batch_seconds", "Time to hand one batch to the transport", ["channel"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LATENCY = Histogram("envoi_send_latency_seconds", "From queued to accepted by the next hop", ["channel"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
API_REQUESTS = Counter("envoi_api_requests_total", "API requests by route and status", ["method", "route", "status"])
QUEUED = Counter("envoi_messages_queued_total", "Messages queued (fan-out and single sends)", ["channel"])


class PrometheusObserver:
    def outcomes(self, channel: str, counts: Mapping[str, int]) -> None:
        for outcome, n in counts.items():
            MESSAGES.labels(channel, outcome).inc(n)

    def handoff(self, channel: str, seconds: float, messages: int) -> None:
        HANDOFF.labels(channel).observe(seconds)

    def queue_to_sent(self, channel: str, seconds: float) -> None:
        LATENCY.labels(channel).observe(seconds)
DNSBL_LISTED = Gauge("envoi_dnsbl_listed", "1 while a platform or account target is listed on a DNSBL zone",
                     ["target", "zone"])
