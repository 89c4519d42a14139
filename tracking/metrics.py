"""Prometheus metrics of the tracking endpoints and the feedback listener."""

from __future__ import annotations

from prometheus_client import Counter

BAD_TOKENS = Counter("envoi_tracking_bad_tokens_total", "Forged, truncated or foreign tracking tokens", ["endpoint"])
HITS = Counter("envoi_tracking_hits_total", "Open and click requests answered", ["kind", "machine"])
FEEDBACK = Counter("envoi_feedback_reports_total", "Inbound reports by kind and correlation outcome",
                   ["source", "kind", "matched"])
