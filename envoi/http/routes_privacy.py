"""Data-subject rights (issue 5): export and erase one contact; an account's restitution archive (admin).

- `GET /v1/contacts/{id}/export`: everything about one contact as JSON (GDPR arts. 15 and 20).
- `DELETE /v1/contacts/{id}`: erasure (art. 17); the addresses stay suppressed as keyed hashes.
- `POST /v1/contacts/{id}/consents/{consent id}/confirmation-link`: a double opt-in link (`/optin/<token>`).
- `GET /admin/v1/accounts/{id}/export`: the account's archive (ZIP of NDJSON + CSV, docs/account-export.md),
  the restitution due at termination; platform admin key only.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from crm import accounts as account_repo
from crm import double_opt_in, privacy, retention
from envoi.composition import address_hasher
from envoi.http.deps import Services, admin, current_account, services
from envoi.http.problems import not_found
from unsubscribe.tokens import PURPOSE_CONFIRM, LinkClaims

router = APIRouter(prefix="/v1", tags=["data-subject rights"])
admin_router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(admin)])


@router.get("/contacts/{contact_id}/export")
def export_contact(contact_id: int, account: account_repo.Account = Depends(current_account),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.connect() as conn:
        data = privacy.export_contact(conn, account.id, contact_id)
    if data is None:
        raise not_found("contact", "contact_id")
    return data


@router.delete("/contacts/{contact_id}")
def erase_contact(contact_id: int, account: account_repo.Account = Depends(current_account),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.engine.begin() as conn:
        result = privacy.erase_contact(conn, account.id, contact_id, address_hasher(svc.settings), actor="api")
    if result is None:
        raise not_found("contact", "contact_id")
    return {"id": contact_id, "erased": True, **result}


@router.post("/contacts/{contact_id}/consents/{consent_id}/confirmation-link", status_code=201)
def confirmation_link(contact_id: int, consent_id: int, account: account_repo.Account = Depends(current_account),
                      svc: Services = Depends(services)) -> dict[str, Any]:
    """Double opt-in: a signed link for the CRM's confirmation email; following it and pressing the button
    appends the confirmation (time, IP, user agent) to the consent ledger."""
    with svc.engine.connect() as conn:
        if not double_opt_in.pending_grant(conn, account.id, contact_id, consent_id):
            raise not_found("consent grant", "consent_id")
    token = svc.links.signer.sign(LinkClaims(PURPOSE_CONFIRM, account.id, contact_id, consent_id, 0))
    return {"url": f"{svc.settings.public_url}/optin/{token}"}


def _archive(svc: Services, account_id: int) -> str | None:
    fd, path = tempfile.mkstemp(prefix=f"envoi-account-{account_id}-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as out, svc.engine.connect() as conn:
            manifest = retention.write_account_archive(conn, account_id, out)
    except BaseException:
        os.unlink(path)
        raise
    if manifest is None:
        os.unlink(path)
        return None
    with svc.engine.begin() as conn:
        account_repo.audit(conn, account_id, "admin", "account.exported", {"files": manifest["files"]})
    return path


@admin_router.get("/accounts/{account_id}/export")
async def export_account(account_id: int, svc: Services = Depends(services)) -> FileResponse:
    path = await asyncio.to_thread(_archive, svc, account_id)
    if path is None:
        raise not_found("account", "account_id")
    return FileResponse(path, media_type="application/zip", filename=f"envoi-account-{account_id}.zip",
                        background=BackgroundTask(os.unlink, path))
