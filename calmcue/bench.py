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
    "firmware.host.bench_policy",
    "companion.bench_ingest",
    "companion.bench_faults",
    "companion.bench_api",
    "firmware.pi.bench_agent",
    "firmware.tools.bench_headset",
    "firmware.tools.bench_fleet",
    "calmcue.bench_fleet",
]


def register(sub) -> None:  # type: ignore[no-untyped-def]
    """`calmcue bench ...`: `all` (what make bench runs) and `fleet` (the fleet simulator)."""
    p = sub.add_parser("bench", help="benchmarks (make bench) and the fleet simulator")
    bsub = p.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    a = bsub.add_parser("all", help="every benchmark of make bench, or the modules named")
    a.add_argument("modules", nargs="*", help=f"modules (default: all of {', '.join(BENCHES)})")
    a.set_defaults(func=lambda args: main(args.modules))
    f = bsub.add_parser(
        "fleet",
        help="N simulated devices over real MQTT connections against a real companion",
        description="Simulated devices (each its own MQTT connection, real events, status with "
        "LWT, telemetry) against the companion started here; prints one table line and appends "
        "the figures to var/bench/fleet.json (docs/fleet.md, 'Fleet scale'). Exit 1 when a "
        "device could not connect or an event was lost.",
    )
    f.add_argument("--devices", type=int, required=True, help="number of simulated devices")
    f.add_argument("--rate-multiple", type=float, default=10.0,
                   help="multiple of the field rate per device (1 = 0.02 events/s and 0.02 "
                   "telemetry/s each: 20 + 20 per second for 1,000 devices; default 10)")  # fmt: skip
    f.add_argument("--duration", type=float, default=30.0, help="traffic seconds (default 30)")
    f.add_argument("--mqtt", help="a running broker, mqtt://[user:pass@]host:port (every device "
                   "uses that account); default: an embedded Mosquitto with per-device accounts")  # fmt: skip
    f.add_argument("--db", help="the companion's database URL (default: a fresh SQLite file)")
    f.add_argument("--storm", action="store_true",
                   help="after the traffic, every device drops its link at once and reconnects")  # fmt: skip
    f.add_argument("--cluster", action="store_true",
                   help="a three-node RabbitMQ cluster instead of Mosquitto (docs/cluster.md); "
                   "devices fail over between its nodes")  # fmt: skip
    f.add_argument("--kill-node", action="store_true",
                   help="with --cluster: kill -9 one node halfway through the traffic")
    f.add_argument("--out", default="var/bench/fleet.json", help="JSON figures (appended run)")
    f.set_defaults(func=_fleet)


def _fleet(args) -> int:  # type: ignore[no-untyped-def]
    if args.devices < 1:
        print("calmcue bench fleet: --devices must be at least 1", file=sys.stderr)
        return 2
    if args.rate_multiple < 0 or args.duration <= 0:
        print("calmcue bench fleet: --rate-multiple must be >= 0 and --duration > 0",
              file=sys.stderr)  # fmt: skip
        return 2
    from calmcue.bench_fleet import cli

    return cli(args)


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
