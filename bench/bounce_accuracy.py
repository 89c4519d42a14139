"""Accuracy of the bounce parser on a labelled corpus (issue 4: ≥ 97 % kind, ≥ 98 % recipient).

Usage: .venv/bin/python bench/bounce_accuracy.py [--corpus DIR] [--verbose]
The corpus is a folder of `.eml` files in sub-folders (one per MTA / source) with an `expected.json`
mapping "sub/file.eml" → {"recipient", "kind", "status"}. Recipients compare case-insensitively; a null
expectation matches a null answer. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracking.bounces import parse_bounce

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bounces"


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().lower() == (b or "").strip().lower()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--verbose", action="store_true", help="list every mismatch")
    args = parser.parse_args()
    expected: dict[str, dict[str, str | None]] = json.loads((args.corpus / "expected.json").read_text())

    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    confusion: Counter[tuple[str, str]] = Counter()
    misses: list[str] = []
    started = time.perf_counter()
    for name, want in sorted(expected.items()):
        got = parse_bounce((args.corpus / name).read_bytes())
        source = name.split("/", 1)[0]
        kind_ok = got.kind.value == want["kind"]
        rcpt_ok = _same(got.recipient, want["recipient"])
        per_source[source].update(total=1, kind=kind_ok, recipient=rcpt_ok)
        confusion[(str(want["kind"]), got.kind.value)] += 1
        if not (kind_ok and rcpt_ok):
            misses.append(f"{name}: want {want['kind']}/{want['recipient']} got {got.kind.value}/{got.recipient}"
                          f" ({got.reason}, {got.detector})")
    elapsed = time.perf_counter() - started

    total = sum(c["total"] for c in per_source.values())
    kind_ok = sum(c["kind"] for c in per_source.values())
    rcpt_ok = sum(c["recipient"] for c in per_source.values())
    print(f"{'source':22} {'n':>4} {'kind':>7} {'recipient':>10}")
    for source, c in sorted(per_source.items()):
        print(f"{source:22} {c['total']:4d} {c['kind'] / c['total']:7.1%} {c['recipient'] / c['total']:10.1%}")
    print(f"{'ALL':22} {total:4d} {kind_ok / total:7.1%} {rcpt_ok / total:10.1%}")
    print("confusion (expected → got):", dict(sorted((f"{a}->{b}", n) for (a, b), n in confusion.items())))
    if args.verbose or len(misses) <= 20:
        for line in misses:
            print("  MISS", line)
    print(json.dumps({"messages": total, "kind_accuracy": round(kind_ok / total, 4),
                      "recipient_accuracy": round(rcpt_ok / total, 4), "mismatches": len(misses),
                      "per_message_ms": round(1000 * elapsed / total, 3),
                      "by_source": {s: c["total"] for s, c in sorted(per_source.items())}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
