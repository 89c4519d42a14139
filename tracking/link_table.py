"""The campaign link table (`crm.schema.campaign_links`): URL ↔ index, written when a URL first appears."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crm.db import utcnow
from crm.schema import campaign_links


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def indexes(conn: Connection, campaign_id: int, urls: Sequence[str]) -> dict[str, int]:
    """Index of each URL in the campaign's table, adding the missing ones.

    Two workers may add different URLs at once: both compute the same next index, one insert loses on the
    (campaign, idx) key and is retried with a fresh maximum (bounded)."""
    wanted = {url_hash(u): u for u in dict.fromkeys(urls)}
    found = _known(conn, campaign_id, list(wanted))
    ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for _ in range(20):
        missing = [h for h in wanted if h not in found]
        if not missing:
            break
        top = conn.execute(select(func.coalesce(func.max(campaign_links.c.idx), -1))
                           .where(campaign_links.c.campaign_id == campaign_id)).scalar_one()
        now = utcnow()
        rows = [{"campaign_id": campaign_id, "idx": int(top) + 1 + i, "url_hash": h, "url": wanted[h],
                 "created_at": now} for i, h in enumerate(missing)]
        conn.execute(ins(campaign_links).values(rows).on_conflict_do_nothing())
        found.update(_known(conn, campaign_id, missing))
    else:  # pragma: no cover - 20 lost races in a row means something else is wrong
        raise RuntimeError(f"campaign {campaign_id}: could not allocate link indexes")
    return {wanted[h]: idx for h, idx in found.items()}


def _known(conn: Connection, campaign_id: int, hashes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(hashes), 500):
        rows = conn.execute(select(campaign_links.c.url_hash, campaign_links.c.idx).where(
            campaign_links.c.campaign_id == campaign_id, campaign_links.c.url_hash.in_(hashes[i:i + 500])))
        out.update({h: int(idx) for h, idx in rows})
    return out


def url_at(conn: Connection, campaign_id: int, idx: int) -> str | None:
    row = conn.execute(select(campaign_links.c.url).where(
        campaign_links.c.campaign_id == campaign_id, campaign_links.c.idx == idx)).first()
    return str(row[0]) if row else None
