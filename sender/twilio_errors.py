"""Twilio REST errors → transient / permanent, in one table (STANDARDS.md §6; issue 6).

Why a table: a permanent outcome counts toward the 3-failure rule and the campaign failure rate (contract
Annex 1, obligation 3 and "Suspension"), so only what is the *recipient's* fault may be permanent. Throttling,
queue overflow, server errors and our own credential problems are retried (the retry policy caps them).
"""

from __future__ import annotations

from sender.transport import Outcome

TOO_MANY_REQUESTS = 20429
QUEUE_OVERFLOW = frozenset({21611, 30001})  # "This 'From' number has exceeded the maximum number of queued
# messages" / "Queue overflow": the sender's outbound queue at Twilio is full — retry later.
UNSUBSCRIBED = 21610  # the recipient replied STOP at the carrier: also suppress the number (issue 6)
INVALID_TO = 21211
NOT_MOBILE = 21614

TRANSIENT_CODES: frozenset[int] = frozenset({TOO_MANY_REQUESTS, *QUEUE_OVERFLOW})
PERMANENT_CODES: frozenset[int] = frozenset({UNSUBSCRIBED, INVALID_TO, NOT_MOBILE})
# 401/403 (20003 "Authenticate") mean *our* credentials are wrong: not the recipient's fault, so not a
# delivery failure; retrying gives ops the time to fix the configuration.
_TRANSIENT_STATUSES = frozenset({401, 403, 408, 429})


def classify_rest_error(http_status: int | None, code: int | None) -> Outcome:
    """The outcome of a failed `Messages.create`: by Twilio error code first, then by HTTP status."""
    if code in TRANSIENT_CODES:
        return Outcome.TRANSIENT
    if code in PERMANENT_CODES:
        return Outcome.PERMANENT
    if http_status is None or http_status in _TRANSIENT_STATUSES or http_status >= 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT  # any other 4xx: the request for this recipient will not succeed as is
