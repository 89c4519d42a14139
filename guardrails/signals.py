"""The port through which the tracking slice feeds the mailing thresholds: engagement and complaints.

Pure (a Protocol and a value type) so that `tracking` can implement it without importing `sender`: the
threshold monitor (`sender.thresholds_monitor`) asks for a campaign's signals at every judgement; the
composition root (`envoi.composition.campaign_signals`) chooses the implementation, `NoSignals` until the
tracking slice provides one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from guardrails.thresholds import DomainCounters


@dataclass(frozen=True, slots=True)
class Signals:
    """What the tracking slice knows about one mailing (a campaign, or an account's transactional window)."""

    unique_human_opens: int = 0  # distinct recipients who opened; machine opens (Apple MPP, scanners) excluded
    machine_opens: int = 0  # reported apart, never counted as opens
    domains: tuple[DomainCounters, ...] = ()  # per registrable domain (and `mx:<provider>`): delivered, complaints
    blocklisted_by: tuple[str, ...] = ()  # DNSBL zones listing the account's sending IPs / domains
    # Final failures reported after the hand-off (DSNs for messages a relay accepted): they count toward the
    # failure rate like a synchronous rejection (the attempt itself is already counted at hand-off).
    async_failures: int = 0


class CampaignSignals(Protocol):
    async def campaign(self, campaign_id: int) -> Signals: ...

    async def transactional(self, account_id: int, since: datetime) -> Signals: ...


class NoSignals:
    """The default: no engagement or complaint data (thresholds that need it are then never crossed)."""

    async def campaign(self, campaign_id: int) -> Signals:
        return Signals()

    async def transactional(self, account_id: int, since: datetime) -> Signals:
        return Signals()
