"""The cue-policy latency benchmark runs on the MicroPython unix port and decides within
budget (5 ms from the crossing window to the decision; the figures are far below it)."""

from __future__ import annotations

import json
from pathlib import Path

from firmware import bench_policy, policy_replay

DATA = Path(__file__).parent / "data" / "policy_scenarios.json"


def test_decision_latency_on_micropython(mpy) -> None:
    code = (
        "import json\nfrom firmware import bench_policy\n"
        f"print(json.dumps(bench_policy.measure({str(DATA)!r}, 1)))\n"
    )
    r = json.loads(mpy(code, heapsize="8M").stdout.strip().splitlines()[-1])
    doc = json.loads(DATA.read_text())
    cue_windows = 0
    n_windows = 0
    for sc in doc["scenarios"]:
        n_windows += sum(1 for _ in policy_replay.windows(sc["script"]))
        ts = {d["t"] for d in policy_replay.run(sc) if d["type"] == "cue"}
        cue_windows += len(ts)
    assert r["windows"]["n"] == n_windows
    assert r["deciding_windows"]["n"] == cue_windows > 0
    assert r["deciding_windows"]["p99_us"] <= 5000


def test_bench_registered() -> None:
    from calmcue.bench import BENCHES

    assert "firmware.bench_policy" in BENCHES
    assert callable(bench_policy.main)
