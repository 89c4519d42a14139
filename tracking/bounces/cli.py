"""`envoi bounces classify FILE...`: one JSON object per file, one per line, in order (issue 4)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tracking.bounces.parser import parse_bounce
from tracking.bounces.result import BounceKind

bounces = click.Group("bounces", help="Inspect bounce and complaint reports.")


@bounces.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def classify(files: tuple[Path, ...]) -> None:
    """Classify each FILE (a raw RFC 5322 message) as hard, soft, complaint or other."""
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            line = {"file": str(path), "recipient": None, "kind": BounceKind.OTHER.value, "status": None,
                    "reason": f"unreadable:{exc.strerror or type(exc).__name__}"}
        else:
            line = parse_bounce(raw).as_json_dict(str(path))
        click.echo(json.dumps(line, ensure_ascii=False))
