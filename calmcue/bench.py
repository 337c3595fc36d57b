"""`make bench`: every benchmark in one run, each printing its measured figures.

Each area adds a module with `main() -> dict` to BENCHES; the figures are printed as they come
and written together to var/bench.json.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

BENCHES: list[str] = [
    "models.bench_features",
    "models.bench_model",
    "models.bench_conversations",
    "firmware.bench_policy",
    "companion.bench_ingest",
    "companion.bench_faults",
    "companion.bench_api",
    "firmware.pi.bench_agent",
    "firmware.tools.bench_headset",
    "firmware.tools.bench_fleet",
]


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or BENCHES
    results: dict[str, object] = {}
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = importlib.import_module(name).main()
        except Exception as exc:  # a broken benchmark is reported, the others still run
            failed += 1
            results[name] = {"error": repr(exc)}
            print(f"   FAILED: {exc!r}", flush=True)
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
    out = Path("var/bench.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"figures written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
