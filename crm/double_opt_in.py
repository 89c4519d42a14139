"""Double opt-in: the recipient confirms a consent grant by following a signed link (CNIL: proof of consent,
GDPR art. 7(1)). The confirmation is a new ledger entry — nothing is overwritten — that copies the grant's
source, legal basis and wording and records when, from which IP and with which user agent it was confirmed."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from crm.contacts import ConsentRecord, record_consents
from crm.db import as_utc, utcnow
from crm.domain import Channel, ConsentStatus, LegalBasis
from crm.schema import consents


def pending_grant(conn: Connection, account_id: int, contact_id: int, consent_id: int) -> bool:
    row = conn.execute(select(consents.c.status).where(
        consents.c.id == consent_id, consents.c.account_id == account_id, consents.c.contact_id == contact_id)).first()
    return row is not None and row.status == ConsentStatus.GRANTED


def confirm(conn: Connection, account_id: int, contact_id: int, consent_id: int, ip: str | None,
            user_agent: str | None) -> bool | None:
    """Record the confirmation of grant `consent_id`: True if recorded, False if it was confirmed already,
    None if there is no such grant for this contact."""
    grant = conn.execute(select(consents).where(
        consents.c.id == consent_id, consents.c.account_id == account_id, consents.c.contact_id == contact_id,
    )).first()
    if grant is None or grant.status != ConsentStatus.GRANTED:
        return None
    confirmed = conn.execute(select(consents.c.id).where(
        consents.c.account_id == account_id, consents.c.contact_id == contact_id,
        consents.c.channel == grant.channel, consents.c.id > consent_id, consents.c.double_opt_in_at.is_not(None),
    )).first()
    if confirmed is not None:
        return False
    record_consents(conn, account_id, [(contact_id, ConsentRecord(
        channel=Channel(grant.channel), status=ConsentStatus.GRANTED, source=grant.source,
        legal_basis=LegalBasis(grant.legal_basis), wording=grant.wording, ip=ip, user_agent=(user_agent or "")[:500],
        given_at=as_utc(grant.given_at), double_opt_in_at=utcnow(),
    ))])
    return True
