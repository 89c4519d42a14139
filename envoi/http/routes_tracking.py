"""Issue 4: campaign statistics per recipient domain (and mailbox provider)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from crm import accounts as account_repo
from crm import campaigns as campaign_repo
from envoi.http.deps import Services, current_account, services
from envoi.http.problems import not_found
from tracking.stats import campaign_domain_stats

router = APIRouter(prefix="/v1", tags=["statistics"])


@router.get("/campaigns/{campaign_id}/stats/domains")
async def campaign_domains(campaign_id: int, request: Request,
                           source: Literal["counters", "ledger"] = Query("counters", description=(
                               "counters: the Redis counters (fast); ledger: recomputed from the SQL events")),
                           mx: bool = Query(False, description=(
                               "also group domains by mailbox provider from their MX hosts (DNS lookups, cached)")),
                           account: account_repo.Account = Depends(current_account),
                           svc: Services = Depends(services)) -> dict[str, Any]:
    """Sent, delivered, deferred, hard/soft bounces, complaints, unique opens (human/machine), clicks and
    unsubscribes, in total and per registrable recipient domain, with a mailbox-provider grouping."""
    with svc.engine.connect() as conn:
        if campaign_repo.get_campaign(conn, account.id, campaign_id) is None:
            raise not_found("campaign", "campaign_id")
    tracking = getattr(request.app.state, "tracking", None) if mx else None
    return await campaign_domain_stats(svc.engine, svc.redis, campaign_id, source,
                                       tracking.mx if tracking is not None else None)
