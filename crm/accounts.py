"""Accounts, API keys (stored hashed), sender profiles and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from crm.db import utcnow
from crm.domain import AccountStatus, SenderProfile
from crm.schema import accounts, api_keys, audit_log, sender_profiles

KEY_PREFIX = "ev_"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    status: AccountStatus
    suspension_reason: str | None
    suspension_evidence: dict[str, Any] | None
    billing_state: str
    settings: dict[str, Any]
    webhook_url: str | None


def hash_key(key: str) -> str:
    # API keys carry 256 bits of randomness, so a plain SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def create_account(conn: Connection, name: str, actor: str = "cli") -> tuple[int, str]:
    """Create an account and its first API key; return (account id, the key in clear, shown once)."""
    now = utcnow()
    account_id = conn.execute(
        insert(accounts)
        .values(name=name, status=AccountStatus.ACTIVE, billing_state="current", settings={}, created_at=now)
        .returning(accounts.c.id)
    ).scalar_one()
    key = issue_api_key(conn, account_id)
    audit(conn, account_id, actor, "account.created", {"name": name})
    return account_id, key


def issue_api_key(conn: Connection, account_id: int) -> str:
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    conn.execute(
        insert(api_keys).values(account_id=account_id, prefix=prefix, key_hash=hash_key(key), created_at=utcnow())
    )
    return key


def account_for_key(conn: Connection, key: str) -> Account | None:
    row = conn.execute(
        select(accounts)
        .join(api_keys, api_keys.c.account_id == accounts.c.id)
        .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
    ).first()
    return _account(row) if row else None


def get_account(conn: Connection, account_id: int) -> Account | None:
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    return _account(row) if row else None


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        status=AccountStatus(row.status),
        suspension_reason=row.suspension_reason,
        suspension_evidence=row.suspension_evidence,
        billing_state=row.billing_state,
        settings=row.settings or {},
        webhook_url=row.webhook_url,
    )


def set_status(
    conn: Connection,
    account_id: int,
    status: AccountStatus,
    actor: str,
    reason: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(status=status, suspension_reason=reason, suspension_evidence=evidence)
    )
    audit(conn, account_id, actor, f"account.{status.value}", {"reason": reason, "evidence": evidence})


def get_sender_profile(conn: Connection, account_id: int) -> SenderProfile | None:
    row = conn.execute(select(sender_profiles).where(sender_profiles.c.account_id == account_id)).first()
    if row is None:
        return None
    return SenderProfile(
        legal_name=row.legal_name,
        postal_address=row.postal_address,
        phone=row.phone,
        from_email=row.from_email,
        from_name=row.from_name,
        reply_to=row.reply_to,
        sms_sender_id=row.sms_sender_id,
    )


def put_sender_profile(conn: Connection, account_id: int, profile: SenderProfile, actor: str) -> None:
    values = {
        "legal_name": profile.legal_name,
        "postal_address": profile.postal_address,
        "phone": profile.phone,
        "from_email": profile.from_email,
        "from_name": profile.from_name,
        "reply_to": profile.reply_to,
        "sms_sender_id": profile.sms_sender_id,
        "updated_at": utcnow(),
    }
    done = conn.execute(
        update(sender_profiles).where(sender_profiles.c.account_id == account_id).values(**values)
    ).rowcount
    if not done:
        conn.execute(insert(sender_profiles).values(account_id=account_id, **values))
    audit(conn, account_id, actor, "sender_profile.updated", {"legal_name": profile.legal_name})


def audit(conn: Connection, account_id: int | None, actor: str, action: str, data: dict[str, Any]) -> None:
    conn.execute(
        insert(audit_log).values(account_id=account_id, actor=actor, action=action, data=data, created_at=utcnow())
    )
