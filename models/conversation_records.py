"""Cue settings tried on the conversation benchmark in seconds, not in half an hour.

The benchmark's cost is rendering the audio and the front end; the model and the cue policy
are cheap. `calmcue model evaluate --conversations --records DIR` keeps the front end's window
records of every conversation (models/conversations.py `record`); this front end replays the
same records through the shipped model and `firmware.core.policy` with other cue settings
(`replay`), and chooses an operating point from false cues per hour of calm speech across every
condition row at once, the way wake-word engines choose theirs from false accepts per hour.

    python -m models.conversation_records --per-speaker 2 --set intense_after_s=1.5

records the conditions that have no records yet (the first run costs what the benchmark
costs), then prints each row, the false cues per hour pooled over all rows, and the worst row
of each target. At the shipped defaults it gives the benchmark's onnxruntime rows
(tests/test_conversation_records.py), but for conversations that a faint voice kept going
after a stress cue (conversations.Recorded: one figure in each of three rows differs). Settings that change the records
(conversations.RECORDED_SETTINGS: speech gate, hop, conversation gap, attribution) are refused:
they need a benchmark run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from firmware.core.cue_settings import SettingsError
from models import conversations as cv

RECORDS = cv.REPO / "var" / "conversation-records"  # as `--records` of the CLI suggests


def pooled(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """False cues per hour pooled over every row's calm speech, and each target's worst row."""
    hours = sum(r["calm_speech_h"] for r in rows.values())
    false = sum((r["false_cues_per_hour"] or 0) * r["calm_speech_h"] for r in rows.values())
    angry = {n: r["angry"] for n, r in rows.items() if r.get("angry")}

    def worst(values: dict[str, Any], high: bool) -> tuple[str, Any] | None:
        vals = {k: v for k, v in values.items() if v is not None}
        if not vals:
            return None
        k = max(vals, key=lambda n: vals[n]) if high else min(vals, key=lambda n: vals[n])
        return k, vals[k]

    return {
        "false_cues_per_hour": round(false / hours, 2) if hours else None,
        "worst_calm_cued": worst({n: r.get("calm_cued") for n, r in rows.items()}, True),
        "worst_angry_cued": worst({n: a["cued"] for n, a in angry.items()}, False),
        "worst_angry_p90_s": worst({n: a["latency_p90_s"] for n, a in angry.items()}, True),
        "worst_happy_cued": worst({n: r.get("happy_cued") for n, r in rows.items()}, True),
        "worst_settled": worst({n: a["settled"] for n, a in angry.items()}, False),
    }


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.conversation_records",
        description="Replay the conversation benchmark's front-end records through the shipped "
        "model and the cue policy with other settings (records are made on first use)",
    )
    p.add_argument("--per-speaker", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--condition", action="append", help="only this condition (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a cue setting")
    p.add_argument(
        "--records",
        default=str(RECORDS),
        metavar="DIR",
        help=f"records folder (default {RECORDS.relative_to(cv.REPO)})",
    )
    args = p.parse_args(argv)
    over: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: write KEY=VALUE")
        over[key.strip()] = _value(value.strip())
    fixed = sorted(k for k in over if k in cv.RECORDED_SETTINGS)
    if fixed:
        p.error(f"{', '.join(fixed)} change what was recorded; run the benchmark instead")
    names = args.condition or list(cv.CONDITIONS)
    unknown = [n for n in names if n not in cv.CONDITIONS]
    if unknown:
        p.error(f"unknown condition {unknown[0]!r}; choose from {', '.join(cv.CONDITIONS)}")
    try:
        report = cv.run_benchmark(
            cv.HeldOutModels.shipped(),
            names,
            args.per_speaker,
            args.seed,
            progress=lambda line: print(line, flush=True),
            records=Path(args.records),
            overrides=over,
        )
    except SettingsError as exc:  # the policy's own check of the settings given
        p.error(str(exc))
    print(json.dumps(pooled(report["conditions"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
