"""The mailing thresholds of the contract, evaluated over plain counter snapshots.

Contract, Annex 1, "Suspension" (ii): the provider may suspend the account immediately « dans le cas d'une
utilisation du service d'envoi d'e-mails du Prestataire qui entraîne plus de dix pour cent (10 %) d'échecs
de distribution par événement de publipostage, dans le cas de plaintes pour envois de courriers
électroniques indésirables dépassant le taux de cinq (5) pour mille par domaine et événement de
publipostage, dans le cas d'un taux d'ouverture inférieur à cinq pour cent (5 %) par événement de
publipostage ou dans le cas d'une utilisation entraînant une mise sur liste noire en raison d'envois non
sollicités ».

A "mailing event" is one campaign send, or for transactional sends a rolling 24 h window per account
(BRIEF): the caller builds one `MailingSnapshot` per event. Every rate here has an integer numerator and
denominator; comparisons are exact (fractions), and a zero denominator gives a rate of 0, never an error.

Each evaluation reports the current value, the limit, the *distance* (positive: margin left before the line;
negative: beyond it) and whether it is judged at all yet (minimum volume reached, delay elapsed), so that
campaign statistics can show all four thresholds and the suspension can carry the evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from guardrails.account_state import SuspensionReason
from guardrails.policy import CONTRACT_DEFAULTS, GuardrailPolicy

# BRIEF, contract table: transactional / API single sends are judged over a rolling window per account.
TRANSACTIONAL_WINDOW = timedelta(hours=24)


class Threshold(StrEnum):
    FAILURE_RATE = "failure_rate"
    COMPLAINT_RATE = "complaint_rate"
    OPEN_RATE = "open_rate"
    BLOCKLISTED = "blocklisted"

    @property
    def suspension_reason(self) -> SuspensionReason:
        return SuspensionReason(self.value)


class Direction(StrEnum):
    CEILING = "ceiling"  # crossed when value > limit
    FLOOR = "floor"  # crossed when value < limit


@dataclass(frozen=True, slots=True)
class DomainCounters:
    """Per recipient domain of one mailing. Grouping is the caller's: by registrable domain, and also by
    mailbox provider where the MX reveals it (e.g. `domain="mx:google"`); each group is judged on its own."""

    domain: str
    delivered: int
    complaints: int


@dataclass(frozen=True, slots=True)
class MailingSnapshot:
    """Counters of one mailing event, read at one instant.

    attempted: messages for which a delivery was attempted (handed to a transport at least once);
    failed: final failures (hard bounces + soft failures whose retries are exhausted, per the bounce policy);
    delivered: accepted by the next hop; unique_human_opens: distinct recipients who opened, machine opens
    (Apple MPP, scanners) excluded and reported apart; completed_at: when the send finished (None while it
    runs); blocklisted_by: the DNSBL zones or SMTP replies citing a blocklist attributed to this account.
    """

    mailing_id: str
    attempted: int = 0
    failed: int = 0
    delivered: int = 0
    unique_human_opens: int = 0
    machine_opens: int = 0
    domains: tuple[DomainCounters, ...] = ()
    completed_at: datetime | None = None
    blocklisted_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Evaluation:
    threshold: Threshold
    direction: Direction
    numerator: int
    denominator: int
    limit: float
    judged: bool  # False below the minimum volume / before the judging time: never crossed then
    minimum: int = 0  # the minimum volume that makes it judged (attempts, complaints, delivered)
    scope: str = ""  # the recipient domain for complaints
    note: str = ""  # why not judged yet

    @property
    def value(self) -> float:
        return float(_ratio(self.numerator, self.denominator))

    @property
    def distance(self) -> float:
        """Margin before the line: limit - value for a ceiling, value - limit for a floor (< 0: beyond it)."""
        return float(self._exact_distance)

    @property
    def _exact_distance(self) -> Fraction:
        value, limit = _ratio(self.numerator, self.denominator), _exact(self.limit)
        return limit - value if self.direction is Direction.CEILING else value - limit

    @property
    def crossed(self) -> bool:
        # Strict: "plus de 10 %", "dépassant 5 ‰", "inférieur à 5 %" — exactly on the line is not crossed.
        return self.judged and self._exact_distance < 0

    def evidence(self) -> dict[str, object]:
        """JSON-serialisable figures for the suspension record and the webhook."""
        data: dict[str, object] = {
            "threshold": self.threshold.value,
            "value": round(self.value, 6),
            "limit": self.limit,
            "distance": round(self.distance, 6),
            "numerator": self.numerator,
            "denominator": self.denominator,
            "minimum": self.minimum,
            "judged": self.judged,
            "crossed": self.crossed,
        }
        if self.scope:
            data["domain"] = self.scope
        if self.note:
            data["note"] = self.note
        return data


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))


def _ratio(numerator: int, denominator: int) -> Fraction:
    return Fraction(numerator, denominator) if denominator > 0 else Fraction(0)


def _non_negative(**counts: int) -> None:
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"counter {name} is negative: {count}")


def evaluate_failure_rate(attempted: int, failed: int, policy: GuardrailPolicy = CONTRACT_DEFAULTS) -> Evaluation:
    """Final failures / attempted deliveries, judged continuously once `failure_min_attempts` is reached."""
    _non_negative(attempted=attempted, failed=failed)
    # Counters are bumped by different events and may lag one another; a failure proves an attempt.
    denominator = max(attempted, failed)
    judged = denominator >= policy.failure_min_attempts
    return Evaluation(
        Threshold.FAILURE_RATE,
        Direction.CEILING,
        failed,
        denominator,
        policy.failure_rate_limit,
        judged,
        policy.failure_min_attempts,
        note="" if judged else f"judged from {policy.failure_min_attempts} attempts",
    )


def evaluate_domain_complaints(counters: DomainCounters, policy: GuardrailPolicy = CONTRACT_DEFAULTS) -> Evaluation:
    """Complaints / delivered at one recipient domain, judged from `complaint_min_count` complaints on."""
    _non_negative(delivered=counters.delivered, complaints=counters.complaints)
    denominator = max(counters.delivered, counters.complaints)  # a complaint proves a delivery
    judged = counters.complaints >= policy.complaint_min_count
    return Evaluation(
        Threshold.COMPLAINT_RATE,
        Direction.CEILING,
        counters.complaints,
        denominator,
        policy.complaint_rate_limit,
        judged,
        policy.complaint_min_count,
        scope=counters.domain,
        note="" if judged else f"judged from {policy.complaint_min_count} complaints",
    )


def evaluate_complaints(
    domains: Iterable[DomainCounters], policy: GuardrailPolicy = CONTRACT_DEFAULTS
) -> list[Evaluation]:
    """One evaluation per domain, crossed ones first, then by smallest distance (the closest to the line)."""
    evaluations = [evaluate_domain_complaints(d, policy) for d in domains]
    return sorted(evaluations, key=lambda e: (not e.crossed, e._exact_distance, e.scope))


def open_rate_due_at(completed_at: datetime, policy: GuardrailPolicy = CONTRACT_DEFAULTS) -> datetime:
    """When the open rate of a completed mailing is judged (once)."""
    return completed_at + policy.open_rate_judge_after


def evaluate_open_rate(
    delivered: int,
    unique_human_opens: int,
    completed_at: datetime | None,
    now: datetime,
    policy: GuardrailPolicy = CONTRACT_DEFAULTS,
) -> Evaluation:
    """Unique human opens / delivered, judged only at `completed_at + open_rate_judge_after` and later.

    Machine opens are not an input: counting them would hide a dead list behind Apple MPP prefetches.
    """
    _non_negative(delivered=delivered, unique_human_opens=unique_human_opens)
    denominator = max(delivered, unique_human_opens)  # an open proves a delivery
    if completed_at is None:
        judged, note = False, "judged after the send completes"
    elif now < open_rate_due_at(completed_at, policy):
        judged, note = False, f"judged at {open_rate_due_at(completed_at, policy).isoformat()}"
    elif denominator < policy.open_rate_min_delivered:
        judged, note = False, f"judged from {policy.open_rate_min_delivered} delivered"
    else:
        judged, note = True, ""
    return Evaluation(
        Threshold.OPEN_RATE,
        Direction.FLOOR,
        unique_human_opens,
        denominator,
        policy.open_rate_floor,
        judged,
        policy.open_rate_min_delivered,
        note=note,
    )


def evaluate_blocklist(blocklisted_by: Iterable[str]) -> Evaluation:
    """Any listing attributed to the account crosses (« mise sur liste noire … envois non sollicités »).

    Expressed as a ceiling of 0 listings so that it reads like the other thresholds (value 0 is the line).
    """
    sources = sorted(set(blocklisted_by))
    return Evaluation(
        Threshold.BLOCKLISTED,
        Direction.CEILING,
        len(sources),
        1,
        0.0,
        True,
        note=", ".join(sources),
    )


@dataclass(frozen=True, slots=True)
class MailingEvaluation:
    mailing_id: str
    evaluated_at: datetime
    failure_rate: Evaluation
    complaints: tuple[Evaluation, ...]  # per domain, crossed / closest first
    open_rate: Evaluation
    blocklist: Evaluation
    machine_opens: int = 0

    @property
    def evaluations(self) -> tuple[Evaluation, ...]:
        return (self.failure_rate, *self.complaints, self.open_rate, self.blocklist)

    @property
    def crossed(self) -> tuple[Evaluation, ...]:
        return tuple(e for e in self.evaluations if e.crossed)

    @property
    def worst_complaints(self) -> Evaluation | None:
        return self.complaints[0] if self.complaints else None

    def suspension_reason(self) -> SuspensionReason | None:
        crossed = self.crossed
        return crossed[0].threshold.suspension_reason if crossed else None

    def suspension_evidence(self) -> dict[str, object] | None:
        """The evidence for `account_state.suspend`, or None when no threshold is crossed."""
        crossed = self.crossed
        if not crossed:
            return None
        return {
            "mailing": self.mailing_id,
            "evaluated_at": self.evaluated_at.isoformat(),
            "reason": crossed[0].threshold.value,
            "crossed": [e.evidence() for e in crossed],
        }


def evaluate(
    snapshot: MailingSnapshot, now: datetime, policy: GuardrailPolicy = CONTRACT_DEFAULTS
) -> MailingEvaluation:
    """All four thresholds of one mailing event at `now`."""
    _non_negative(machine_opens=snapshot.machine_opens)
    return MailingEvaluation(
        snapshot.mailing_id,
        now,
        evaluate_failure_rate(snapshot.attempted, snapshot.failed, policy),
        tuple(evaluate_complaints(snapshot.domains, policy)),
        evaluate_open_rate(snapshot.delivered, snapshot.unique_human_opens, snapshot.completed_at, now, policy),
        evaluate_blocklist(snapshot.blocklisted_by),
        snapshot.machine_opens,
    )
