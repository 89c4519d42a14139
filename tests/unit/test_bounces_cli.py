"""`envoi bounces classify FILE...`: one JSON object per file, one per line, in order (issue 4)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tracking.bounces.cli import bounces, classify

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
KEYS = ["file", "recipient", "kind", "status", "reason"]


def _run(*args: str) -> list[dict[str, str | None]]:
    result = CliRunner().invoke(bounces, ["classify", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_one_json_object_per_file_in_order() -> None:
    files = [CORPUS / "postfix" / "unknown-failed.eml", CORPUS / "postfix" / "full-failed.eml",
             CORPUS / "rfc" / "rfc5965-abuse.eml", CORPUS / "php-bounce-handler" / "vacation-sieve.eml"]
    lines = _run(*map(str, files))
    assert [line["file"] for line in lines] == [str(f) for f in files]
    assert all(list(line) == KEYS for line in lines)
    assert [(line["kind"], line["status"]) for line in lines] == [
        ("hard", "5.1.1"), ("soft", "5.2.2"), ("complaint", None), ("other", None)]
    assert lines[0]["recipient"] == "unknown@remote.test"
    assert lines[0]["reason"] == "user_unknown"


def test_malformed_and_unreadable_files_do_not_stop_the_run(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.eml"
    garbage.write_bytes(b"\x00\xff not a message")
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.eml"
    good = CORPUS / "postfix" / "unknown-failed.eml"
    lines = _run(str(garbage), str(empty), str(missing), str(good))
    assert [line["kind"] for line in lines] == ["other", "other", "other", "hard"]
    assert lines[1]["reason"] == "malformed_input"
    assert str(lines[2]["reason"]).startswith("unreadable:")


def test_classify_is_registered_on_the_group() -> None:
    assert bounces.name == "bounces"
    assert bounces.commands["classify"] is classify


def test_at_least_one_file_is_required() -> None:
    result = CliRunner().invoke(bounces, ["classify"])
    assert result.exit_code != 0
