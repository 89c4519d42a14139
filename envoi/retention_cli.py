"""`envoi retention ...` (issue 5): purge due terminated accounts now (or as of a given time), export an account's
restitution archive to a file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.engine import Engine

from envoi.settings import ConfigError, load_settings

retention = click.Group("retention", help="Account restitution archive and personal-data purge (GDPR).")


def _engine() -> Engine:
    from envoi.composition import database

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc
    return database(settings, run_migrations=False)


@retention.command("purge")
@click.option("--now", "now_text", default=None, help="ISO 8601 time to judge the 3-month delay at (default: now)")
def purge(now_text: str | None) -> None:
    """Purge the personal data of accounts terminated three calendar months ago or more."""
    from envoi.retention import purge_due_accounts

    now = datetime.fromisoformat(now_text) if now_text else datetime.now(UTC)
    engine = _engine()
    try:
        done = purge_due_accounts(engine, now if now.tzinfo else now.replace(tzinfo=UTC))
    finally:
        engine.dispose()
    click.echo(json.dumps({str(k): v for k, v in done.items()}))


@retention.command("export-account")
@click.argument("account_id", type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="the .zip to write")
def export_account(account_id: int, out: Path) -> None:
    """Write an account's restitution archive (docs/account-export.md)."""
    from crm.retention import write_account_archive

    engine = _engine()
    try:
        with out.open("wb") as target, engine.connect() as conn:
            manifest = write_account_archive(conn, account_id, target)
    finally:
        engine.dispose()
    if manifest is None:
        out.unlink(missing_ok=True)
        raise click.ClickException(f"no account {account_id}")
    click.echo(json.dumps(manifest["files"]))
