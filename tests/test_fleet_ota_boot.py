"""The A/B loader (firmware/headset/ota_boot.py) on the MicroPython unix port: slot choice, rollback on
a second unconfirmed boot, and the health deadline timer (a small recording fake Timer)."""

from __future__ import annotations

import json
from pathlib import Path

from calmcue.mpy import REPO

# the hardware edge: a one-shot timer and reset that only record
FAKE_MACHINE = """
class Timer:
    ONE_SHOT = 0
    armed = []
    def __init__(self, n):
        pass
    def init(self, mode, period, callback):
        Timer.armed.append((period, callback))
resets = []
def reset():
    resets.append(1)
# machine.reset_cause() as the ESP32 port numbers the causes; the test sets `cause`.
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
cause = [PWRON_RESET]
def reset_cause():
    return cause[0]
"""


def boot(mpy, flash: Path, after: str = "", cause: int = 1) -> dict:
    fakes = flash / "_fakes"  # not a slot; only the fake hardware
    fakes.mkdir(exist_ok=True)
    (fakes / "machine.py").write_text(FAKE_MACHINE)
    code = ("import json, sys\nfrom machine import Timer, resets\n"
            + f"__import__('machine').cause[0] = {cause}\n" + f"exec(open({str(REPO / 'firmware' / 'headset' / 'ota_boot.py')!r}).read())\n" + after
            + "print(json.dumps({'slot': slot, 'path0': sys.path[0], "
            "'armed': [a[0] for a in Timer.armed], 'resets': len(resets)}))\n")
    out = mpy(code, cwd=flash, paths=[fakes]).stdout.strip().splitlines()[-1]
    return json.loads(out)


def write_pointer(flash: Path, **p) -> None:
    (flash / "ota.json").write_text(json.dumps(p))


def read_pointer(flash: Path) -> dict:
    return json.loads((flash / "ota.json").read_text())


def test_good_pointer_boots_its_slot_without_a_deadline(mpy, tmp_path):
    write_pointer(tmp_path, active="b", state="good", boots=0)
    assert boot(mpy, tmp_path) == {"slot": "b", "path0": "b", "armed": [], "resets": 0}


def test_missing_or_corrupt_pointer_falls_back_to_slot_a(mpy, tmp_path):
    assert boot(mpy, tmp_path)["slot"] == "a"
    (tmp_path / "ota.json").write_text('{"active": "b", "sta')
    assert boot(mpy, tmp_path)["slot"] == "a"


def test_trial_boot_arms_the_deadline_which_resets_if_unconfirmed(mpy, tmp_path):
    write_pointer(tmp_path, active="b", previous="a", state="trial", boots=0, health_s=90,
                  version="2", previous_version="1")
    fire = "Timer.armed[0][1](None)\n"
    got = boot(mpy, tmp_path, after=fire)
    assert got["slot"] == "b" and got["armed"] == [90000] and got["resets"] == 1
    assert read_pointer(tmp_path)["boots"] == 1
    # the reset's boot: still unconfirmed, so back to the previous slot
    got = boot(mpy, tmp_path)
    assert got["slot"] == "a" and got["armed"] == []
    p = read_pointer(tmp_path)
    assert (p["state"], p["failed"], p["failed_version"], p["version"]) == (
        "rolled_back", "b", "2", "1")


def test_confirmed_before_the_deadline_keeps_the_new_slot(mpy, tmp_path):
    write_pointer(tmp_path, active="b", previous="a", state="trial", boots=0)
    confirm_then_fire = (
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from firmware.headset import ota\n"
        "ota.confirm()\n"
        "Timer.armed[0][1](None)\n"
    )
    got = boot(mpy, tmp_path, after=confirm_then_fire)
    assert got["armed"] == [180000] and got["resets"] == 0
    assert read_pointer(tmp_path)["state"] == "good"
    assert boot(mpy, tmp_path)["slot"] == "b"


def test_no_new_update_while_the_current_one_is_on_trial(mpy, tmp_path):
    write_pointer(tmp_path, active="b", previous="a", state="trial", boots=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.py").write_text("# the way back\n")
    code = (
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from firmware.headset import ota\n"
        "try:\n"
        "    ota.apply({'ota_url': 'http://127.0.0.1:1', 'site': 's', 'device': 'd'}, 'u1', "
        "(3, 65537))\n"
        "except ota.OtaError as e:\n"
        "    print(e)\n"
    )
    out = mpy(code, cwd=tmp_path).stdout.strip()
    assert out == "the current bundle is still on trial; it must confirm or roll back first"
    assert (tmp_path / "a" / "main.py").read_text() == "# the way back\n"


def test_soft_reset_by_a_bench_tool_does_not_roll_back_a_trial(mpy, tmp_path):
    """Entering the raw REPL soft-resets the board and runs boot.py again: that is not the
    bundle crashing, so it must not count as the second trial boot (it rolled back before)."""
    write_pointer(tmp_path, active="b", previous="a", state="trial", boots=1, version="2",
                  previous_version="1")
    got = boot(mpy, tmp_path, cause=5)  # SOFT_RESET
    assert got["slot"] == "b"
    p = read_pointer(tmp_path)
    assert (p["state"], p["boots"], p["active"]) == ("trial", 1, "b")
    got = boot(mpy, tmp_path, cause=3)  # a watchdog reset is a failed trial: back to a
    assert got["slot"] == "a" and read_pointer(tmp_path)["state"] == "rolled_back"


def test_crash_looping_confirmed_bundle_rolls_back_then_safe_mode(mpy, tmp_path):
    """A confirmed bundle that later never runs 5 minutes (firmware/headset/app.py clears the count):
    after SAFE_AFTER hard starts in a row the loader goes back to the previous bundle; without
    one it starts no firmware (safe mode, the REPL free for reprovisioning). Soft resets do not
    count."""
    write_pointer(tmp_path, active="b", previous="a", state="good", boots=0, version="2.0.0",
                  previous_version="1.0.0")
    for _ in range(5):
        assert boot(mpy, tmp_path)["slot"] == "b"
    assert boot(mpy, tmp_path, cause=5)["slot"] == "b"  # a soft reset: not counted
    assert read_pointer(tmp_path)["starts"] == 5
    got = boot(mpy, tmp_path)  # the sixth start in a row
    assert got["slot"] == "a"
    p = read_pointer(tmp_path)
    assert (p["state"], p["failed"], p["failed_version"], p["version"], p["previous"]) == (
        "rolled_back", "b", "2.0.0", "1.0.0", None)
    for _ in range(4):  # the old bundle crash-loops too: nothing to go back to
        assert boot(mpy, tmp_path)["slot"] == "a"
    got = boot(mpy, tmp_path)
    assert got["slot"] is None and got["path0"] not in ("a", "b")


def test_firmware_clears_the_start_count_after_five_minutes(host_build, headset_wav, tmp_path,
                                                             mosquitto):
    from fw_harness import run_through

    flash = tmp_path / "flash"
    flash.mkdir()
    write_pointer(flash, active="a", state="good", boots=0, starts=4)
    lines = run_through(host_build, flash, headset_wav, mosquitto.port, "--seconds", "299")
    assert read_pointer(flash)["starts"] == 4  # not yet
    # A confirmed bundle with nothing to report never loads the OTA code: on a tight heap its
    # compile once failed here (MemoryError in the first telemetry's confirm, the device down).
    assert [x["done"]["ota_loaded"] for x in lines if "done" in x] == [False]
    run_through(host_build, flash, headset_wav, mosquitto.port, "--seconds", "301")
    assert read_pointer(flash)["starts"] == 0
