"""The account's own status and sender profile."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from crm import accounts as account_repo
from crm.domain import SenderProfile
from envoi.http.deps import current_account, services
from envoi.http.schemas import SenderProfileIn

router = APIRouter(prefix="/v1", tags=["account"])


def _profile_dict(p: SenderProfile | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"legal_name": p.legal_name, "postal_address": p.postal_address, "phone": p.phone,
            "from_email": p.from_email, "from_name": p.from_name, "reply_to": p.reply_to,
            "sms_sender_id": p.sms_sender_id, "complete": p.is_complete, "missing": p.missing_fields()}


@router.get("/account")
def get_account(account: account_repo.Account = Depends(current_account), svc: Any = Depends(services)
                ) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        profile = account_repo.get_sender_profile(conn, account.id)
    return {"id": account.id, "name": account.name, "status": account.status.value,
            "suspension_reason": account.suspension_reason, "suspension_evidence": account.suspension_evidence,
            "billing_state": account.billing_state, "sender_profile": _profile_dict(profile)}


@router.put("/account/sender-profile")
def put_sender_profile(body: SenderProfileIn, account: account_repo.Account = Depends(current_account),
                       svc: Any = Depends(services)) -> dict[str, Any]:
    profile = SenderProfile(legal_name=body.legal_name, postal_address=body.postal_address, phone=body.phone,
                            from_email=body.from_email, from_name=body.from_name, reply_to=body.reply_to or "",
                            sms_sender_id=body.sms_sender_id)
    with svc.engine.begin() as conn:
        account_repo.put_sender_profile(conn, account.id, profile, actor="api")
    return _profile_dict(profile) or {}
