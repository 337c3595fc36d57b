"""firmware/headset/control.py (commands, config, telemetry, boot helpers) is imported for each
occasional network step and dropped again (firmware/headset/app.py). Device() loads it once at boot,
while the heap is in one piece; after that, loading it must fit a heap cut into small holes, as
the headset's heap is at run time, and leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fw_heap import CUT_HEAP

from firmware.tools import bundle

RELOAD = r"""
import gc, json, sys, micropython
sys.path.insert(0, %(build)r)
HOLE, ROUNDS = %(hole)d, %(rounds)d
hold = [None] * 8000  # made first, while the heap is in one piece
%(cut_heap)s
free = [0] * ROUNDS
for name in ("firmware.core.events", "firmware.core.store", "firmware.headset.net",
             "firmware.headset.outputs", "firmware.core.pipeline", "firmware.headset.app"):  # resident
    __import__(name)
    gc.collect()
import firmware
from firmware.headset import app

from firmware.headset import control  # as Device() does at boot
control = None
app._forget("headset.control")
gc.collect()
k = cut_heap(hold, HOLE)
micropython.mem_info()
for i in range(ROUNDS):
    from firmware.headset import control
    control = None
    app._forget("headset.control")
    gc.collect()
    free[i] = gc.mem_free()
print(json.dumps("firmware.headset.control" in sys.modules or hasattr(firmware.headset, "control")))
print("filled", k)
print(json.dumps(free))
"""


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return bundle.compile_host(tmp_path_factory.mktemp("fw-control-build"))


def test_control_reloads_into_a_fragmented_heap(mpy, build) -> None:
    hole, rounds = 16, 8  # 512 B free runs: below the ~600 B the brief allows one allocation
    code = RELOAD % {"build": str(build), "hole": hole, "rounds": rounds, "cut_heap": CUT_HEAP}
    out = mpy(code, heapsize="144K").stdout.splitlines()
    kept, free = json.loads(out[-3]), json.loads(out[-1])
    assert int(out[-2].split()[1]) < 8000  # the heap was full before the list was
    runs = [int(line.split("max free sz:")[1]) for line in out if "max free sz:" in line]
    assert runs[0] <= hole  # the heap really was cut up
    assert not kept  # dropped after use
    assert free == [free[0]] * rounds  # each load leaves the heap as it found it
