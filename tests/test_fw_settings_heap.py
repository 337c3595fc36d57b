"""The config checks on the headset: not resident (firmware.headset.config and the cue-settings
table, firmware.core.cue_settings, loaded at boot and for each config message, then released),
and small enough in every allocation to load again into a fragmented heap, on the MicroPython
unix port with the modules imported from the ROMFS image as the device does (its settings
table is text that stays in flash)."""

from __future__ import annotations

import json
import subprocess

from fw_heap import CUT_HEAP

from calmcue.shared import romport

# What the headset does with a config message (firmware/headset/app.py
# Device._config_message, without the audio pipeline's buffers, and without the Policy, whose
# own allocations are its own): the config checks imported, the payload checked, saved, the
# policy settings checked as Policy() does and the headset attribution made (and kept), the
# checks released. Then the free heap is cut into holes of at most HOLE blocks (32 B each) and
# the same messages are applied again and again.
APPLY = r"""
import gc, json, os, sys, micropython, uctypes, vfs
a, n = [int(x) for x in os.getenv("CALMCUE_ROM").split(",")]
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(a, n)), "/rom")
sys.path.insert(0, "/rom")
ROOT, HOLE, ROUNDS = %(root)r, %(hole)d, %(rounds)d
hold = [None] * 4000  # made first, while the heap is in one piece
%(cut_heap)s
free = [0] * ROUNDS
same = [None] * ROUNDS
for name in ("firmware.core.events", "firmware.core.store", "firmware.core.features", "firmware.core.policy",
             "firmware.core.attribution", "firmware.core.pipeline", "firmware.headset.app"):  # resident
    __import__(name)
    gc.collect()
import firmware
from firmware.headset import app
from firmware.core.attribution import HeadsetAttribution
from firmware.core.pipeline import policy_settings

PAYLOADS = (
    b'{"rev": 1, "brightness": 0.5, "policy": {"stress_threshold": 0.7, "cue_budget": 3}}',
    b'{"rev": 2, "eu_mode": true, "policy": {"min_gap_s": 5}}',
    b'{"rev": 3, "policy": {"stress_treshold": 0.7}}',
    b'{"rev": 4, "brightness": 7, "policy": {"tense_threshold": 0.9}}',
)
held = [None, None]


def apply(payload):
    try:
        config = app._config()
        cfg, errs = config.parse(payload, app._policy_problems)
        if errs:
            return "; ".join(errs)
        new = config.merged(cfg)
        config.save(new, ROOT)
        held[0] = held[1] = None  # the old pipeline goes first, as in Device._apply_config
        gc.collect()
        from firmware.core.cue_settings import checked

        given = policy_settings(new)
        held[1] = checked(given)[0]["stress_threshold"]
        held[0] = HeadsetAttribution(given)
        return "applied rev %%d" %% new["rev"]
    finally:
        app.release(*app._CHECKS)


def main():
    first = [apply(m) for m in PAYLOADS]  # as at boot: the heap still in one piece
    print(json.dumps(first))
    gone = [m for p, m in (("headset", "config"), ("core", "cue_settings"))
            if "firmware.%%s.%%s" %% (p, m) in sys.modules
            or hasattr(getattr(firmware, p), m)] == []
    print(json.dumps(gone))
    gc.collect()
    k = cut_heap(hold, HOLE)
    micropython.mem_info()
    for i in range(ROUNDS):
        same[i] = apply(PAYLOADS[i %% 4]) == first[i %% 4]  # keeps no reply
        gc.collect()
        free[i] = gc.mem_free()
    micropython.mem_info()
    print("filled", k)
    print(json.dumps(same))
    print(json.dumps(free))


main()
"""


def test_settings_validator_reloads_into_a_fragmented_heap(host_rom, tmp_path) -> None:
    hole, rounds = 11, 24  # 352 B; the largest block the path needs is 321 B
    code = APPLY % {"root": str(tmp_path) + "/", "hole": hole, "rounds": rounds,
                    "cut_heap": CUT_HEAP}  # fmt: skip
    script = tmp_path / "apply.py"
    script.write_text(code)
    proc = subprocess.run([*romport.interpreter(host_rom), "-X", "heapsize=144K", str(script)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    first, gone, free = (json.loads(out[i]) for i in (0, 1, -1))
    same = json.loads(out[-2])
    assert int(out[-3].split()[1]) < 4000  # the heap was full before the list was
    expected = [
        "applied rev 1",
        "applied rev 2",
        "unknown setting 'stress_treshold'; did you mean 'stress_threshold'?",
        "brightness is 7; choose a value between 0 and 1; tense_threshold (0.9) must not be "
        "above stress_threshold (0.6): a conversation is tense before the customer is stressed "
        "enough for empathize; lower tense_threshold",
    ]
    assert first == expected
    assert gone  # dropped after use
    # The heap really was cut up: the largest free run is at most `hole` blocks.
    runs = [int(line.split("max free sz:")[1]) for line in out if "max free sz:" in line]
    assert runs[0] <= hole
    assert same == [True] * rounds  # the same replies as in one piece
    # Nothing kept from one message to the next: each payload leaves the heap as it found it.
    assert free[4:] == free[:-4]


def test_eu_mode_at_the_top_counts_for_the_policy_rules() -> None:
    # The device switches EU mode on for the policy when either eu_mode is true
    # (pipeline.policy_settings); the config check must see the same, or a config it accepts
    # makes Policy() refuse the settings after the old pipeline is gone (and again at boot).
    from firmware.core import cue_settings
    from firmware.headset import config

    def check(p):
        return cue_settings.validate_settings(p)[1]

    errs = config.problems({"eu_mode": True, "policy": {"stress_from_unknown": True}}, check)
    assert len(errs) == 1 and "stress_from_unknown must be false in EU mode" in errs[0]
    assert config.problems({"eu_mode": False, "policy": {"stress_from_unknown": True}}, check) == []
    assert config.problems({"eu_mode": True, "policy": {"min_gap_s": 5}}, check) == []
