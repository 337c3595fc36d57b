"""The headset's ROMFS image carried by signed OTA with the A/B guarantees of the folder bundle:
the image of an update goes into the inactive half of the board's romfs partition
(firmware/host/romflash.py fakes only the flash: 4096-byte erase blocks, writes that only clear
bits, a read-only mapping), and the power is cut in the middle of every erase, every flash write
and every file write of the update and of the boots after it: each time, the next boot comes up
on the old image or the new one, mounted at /rom and matching its record, never neither."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fleet_helpers import FleetServer

from calmcue.shared import romport
from calmcue.shared.mpy import REPO, interpreter
from firmware.tools.fleet_client import DbFleet

SITE = "store-042"
DEVICE = "cc-24a1609c3e58"
PART = 0x40000  # the romfs partition of docs/firmware.md's partition table: two 128 KiB halves
HOST = REPO / "firmware" / "host"
OTA_BOOT = REPO / "firmware" / "headset" / "ota_boot.py"

# Counts the filesystem's writes on the fake flash's clock. LittleFS (the ESP32 port's filesystem)
# commits a file's data when it is closed, so the steps are opening a file to write (it exists,
# empty, from then on) and closing it; a cut at the close leaves half of the data (stricter than
# LittleFS, which would leave the file as it was at the open). Removals and renames are single
# filesystem operations between the counted steps.
COUNT_FILE_WRITES = """
import builtins, io, romflash
_open = open
class _Counted(io.IOBase):
    def __init__(self, f):
        self.f = f
        self.data = bytearray()
    def write(self, b):
        self.data += b
        return len(b)
    def close(self):
        if self.f:
            romflash.step(lambda: self.f.write(self.data[:len(self.data) // 2]))
            self.f.write(self.data)
            self.f.close()
            self.f = None
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.close()
def _counted_open(path, mode="r"):
    if "w" in mode:
        romflash.step(lambda: None)
        return _Counted(_open(path, mode))
    return _open(path, mode)
builtins.open = _counted_open
"""

APPLY = """
import sys, json
sys.path[:0] = [%(repo)r]
sys.path.append(%(host)r)
""" + COUNT_FILE_WRITES + """
from firmware.headset import ota
ident = json.load(_open("device.json"))
print(json.dumps({"applied": ota.apply(ident, %(update)r, ota.load_key(), "2.0.0"),
                  "steps": romflash.steps}))
"""

BOOT = """
import sys, json
sys.path.append(%(host)r)
""" + COUNT_FILE_WRITES + """
exec(_open(%(boot)r).read())
out = {"slot": slot, "path": sys.path[:2], "steps": romflash.steps}
try:
    import cc_version
    out["version"], out["file"] = cc_version.VERSION, cc_version.__file__
except ImportError as e:
    out["version"] = None
print(json.dumps(out))
"""


def tiny_image(tmp: Path, version: str, pad: int = 6000) -> bytes:
    """A ROMFS image (mpremote romfs build) with a module naming its version, and enough data to
    span two erase blocks."""
    src = tmp / f"image-{version}"
    src.mkdir()
    (src / "cc_version.py").write_text(f'VERSION = "{version}"\n')
    (src / "pad.bin").write_bytes(random.Random(version).randbytes(pad))
    out = tmp / f"{version}.romfs"
    subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o", str(out),
                    "build", str(src)], check=True, capture_output=True)  # fmt: skip
    return out.read_bytes()


def run_on_board(flash: Path, script: str, cut: int = 0) -> dict | None:
    """Run `script` on the unix port with the flash folder and its romfs partition; None when
    the power was cut."""
    env = {"CALMCUE_POWER_CUT": str(cut)} if cut else {}
    proc = subprocess.run(
        [*romport.partition_interpreter(partition(flash), PART), "-X", "heapsize=256K", "-c",
         script], cwd=flash, capture_output=True, text=True, timeout=60,
        env={**os.environ, **env})  # fmt: skip
    if proc.returncode == -9:  # killed: the fake flash cut the power
        return None
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def partition(flash: Path) -> Path:
    return flash.with_name(flash.name + ".romfs-partition")


def boot(flash: Path, cut: int = 0) -> dict | None:
    return run_on_board(flash, BOOT % {"host": str(HOST), "boot": str(OTA_BOOT)}, cut)


def snapshot(flash: Path, to: Path) -> None:
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(flash, to)
    shutil.copyfile(partition(flash), partition(to))


def restore(snap: Path, flash: Path) -> None:
    shutil.rmtree(flash)
    shutil.copytree(snap, flash)
    shutil.copyfile(partition(snap), partition(flash))


@pytest.fixture
def update_rig(tmp_path: Path):
    """A board on image 1.0.0 in slot a (the half at 0), a stale image record in slot b (the
    bundle before, whose half the update reuses), and update 2.0.0 carrying its image, published
    and signed by the fleet."""
    old, new = tiny_image(tmp_path, "1.0.0"), tiny_image(tmp_path, "2.0.0")
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    flash = tmp_path / "flash"
    (flash / "a").mkdir(parents=True)
    (flash / "b").mkdir()
    (flash / "a" / "main.py").write_text("import cc_version\n")
    (flash / "a" / "romfs.json").write_text(json.dumps(
        {"size": len(old), "sha256": hashlib.sha256(old).hexdigest()}))
    (flash / "b" / "romfs.json").write_text(json.dumps(
        {"size": 100, "sha256": hashlib.sha256(b"before").hexdigest()}))
    (flash / "ota.json").write_text(json.dumps(
        {"active": "a", "previous": "b", "state": "good", "boots": 0, "version": "1.0.0",
         "previous_version": "0.9.0", "floor": "1.0.0"}))
    (flash / "ota_key.json").write_text(json.dumps(fleet.public_key()))
    part = bytearray(b"\xff" * PART)
    part[: len(old)] = old
    partition(flash).write_bytes(bytes(part))
    update = fleet.create_update(version="2.0.0", site=SITE, percent=100,
                                 files={"main.py": b"import cc_version\n", "romfs.img": new})
    with FleetServer(fleet.store) as server:
        (flash / "device.json").write_text(json.dumps(
            {"site": SITE, "device": DEVICE, "ota_url": server.url}))
        yield flash, str(update["update"]), old, new


def apply(flash: Path, update: str, cut: int = 0) -> dict | None:
    return run_on_board(flash, APPLY % {"repo": str(REPO), "host": str(HOST), "update": update},
                        cut)


def check_boot(got: dict | None) -> str:
    assert got is not None
    assert got["version"] in ("1.0.0", "2.0.0"), got
    assert got["file"] == "/rom/cc_version.py" and got["path"][0] == "/rom", got
    assert got["slot"] == {"1.0.0": "a", "2.0.0": "b"}[got["version"]], got
    return str(got["version"])


def test_update_writes_the_inactive_half_and_boots_it_on_trial(update_rig):
    flash, update, old, new = update_rig
    assert check_boot(boot(flash)) == "1.0.0"
    done = apply(flash, update)
    assert done["applied"] == "2.0.0"
    part = partition(flash).read_bytes()
    assert part[: len(old)] == old  # the active half untouched
    assert part[PART // 2: PART // 2 + len(new)] == new
    assert json.loads((flash / "b" / "romfs.json").read_text()) == {
        "size": len(new), "sha256": hashlib.sha256(new).hexdigest()}
    assert check_boot(boot(flash)) == "2.0.0"
    p = json.loads((flash / "ota.json").read_text())
    assert (p["active"], p["state"], p["boots"]) == ("b", "trial", 1)
    # never confirmed: the next boot goes back to a's image
    assert check_boot(boot(flash)) == "1.0.0"
    assert json.loads((flash / "ota.json").read_text())["state"] == "rolled_back"


def test_power_cut_at_every_step_of_an_image_update_boots_old_or_new(update_rig, tmp_path):
    """The update counted step by step (every erase, flash write, file opened and written), then
    run again once per step with the power cut in the middle of it, from the same start; after
    each cut the board boots, and the boots are cut at every step as well."""
    flash, update, old, new = update_rig
    start = tmp_path / "start"
    snapshot(flash, start)
    total = apply(flash, update)["steps"]
    assert total > 15  # main.py, two blocks erased, the image in chunks, its record, the pointer
    done = tmp_path / "done"
    snapshot(flash, done)
    seen = []
    for cut in range(1, total + 1):
        restore(start, flash)
        assert apply(flash, update, cut) is None, f"the power cut at step {cut} did not happen"
        seen.append(check_boot(boot(flash)))
    # the switch is the pointer's rename: every cut before it boots the old image
    assert seen == ["1.0.0"] * total
    # the first boot of the new image, and the rollback boot, cut at each of their steps
    for state, expect in ((done, "2.0.0"), (None, "1.0.0")):
        if state is None:  # the first boot on trial ran and never confirmed
            restore(done, flash)
            boot(flash)
            state = tmp_path / "trial"
            snapshot(flash, state)
        restore(state, flash)
        steps = boot(flash)["steps"]
        assert steps > 0
        for cut in range(1, steps + 1):
            restore(state, flash)
            assert boot(flash, cut) is None
            assert check_boot(boot(flash)) == expect, (state, cut)


def test_an_image_that_does_not_match_its_record_is_not_mounted(update_rig):
    """Flash that changed under the active image (a worn block, a write nobody made): the loader
    checks the image against its slot's record and goes back to the previous slot's image."""
    flash, update, old, new = update_rig
    apply(flash, update)
    p = json.loads((flash / "ota.json").read_text())
    (flash / "ota.json").write_text(json.dumps({**p, "state": "good"}))  # as if confirmed
    data = bytearray(partition(flash).read_bytes())
    data[PART // 2 + 100] &= 0x0F
    partition(flash).write_bytes(bytes(data))
    assert check_boot(boot(flash)) == "1.0.0"
    p = json.loads((flash / "ota.json").read_text())
    assert (p["active"], p["state"], p["failed"], p["failed_version"]) == (
        "a", "rolled_back", "b", "2.0.0")


def test_a_record_that_names_no_image_does_not_stop_the_loader(update_rig):
    """A damaged romfs.json (here, in both slots): the loader neither crashes nor mounts
    anything; with no good slot left it starts no firmware, as in safe mode."""
    flash, update, old, new = update_rig
    (flash / "a" / "romfs.json").write_text("[1]")
    got = boot(flash)
    assert got["slot"] is None and got["version"] is None and "/rom" not in got["path"]


def test_image_update_refused_before_anything_is_erased(update_rig, tmp_path):
    """A board without a romfs partition (MicroPython before 1.25, or its partition table has
    none) refuses an update that carries an image, and so does one whose halves are too small;
    the active slot and both halves are as they were."""
    flash, update, old, new = update_rig
    before = partition(flash).read_bytes()
    script = APPLY[: APPLY.index("print(json.dumps")] + (
        "try:\n    ota.apply(ident, %(update)r, ota.load_key(), '2.0.0')\n"
        "except ota.OtaError as e:\n    print(e)\n")
    script = script % {"repo": str(REPO), "host": str(HOST), "update": update}
    proc = subprocess.run([*interpreter(), "-X", "heapsize=256K", "-c", script], cwd=flash,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "has no romfs partition" in proc.stdout, proc.stdout + proc.stderr
    assert not (flash / "b" / "main.py").exists()
    small = tmp_path / "small"
    snapshot(flash, small)
    partition(small).write_bytes(before[: 2 * 4096])
    proc = subprocess.run([*romport.partition_interpreter(partition(small), 2 * 4096), "-X",
                           "heapsize=256K", "-c", script], cwd=small, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert "half of this device's romfs partition holds 4096" in proc.stdout, proc.stdout
    assert partition(small).read_bytes() == before[: 2 * 4096]
    assert partition(flash).read_bytes() == before
    assert json.loads((flash / "ota.json").read_text())["active"] == "a"


def test_provisioning_and_ota_carry_the_firmware_image(tmp_path):
    """`calmcue device provision --image` on a board with a romfs partition: the image `make
    firmware` wrote (compiled for the host here) goes into slot a's half, checked on the device;
    the board boots the firmware from /rom. A signed update carrying the image, applied by the
    firmware's own ota module running from that image, boots from slot b's half."""
    from fleet_helpers import FleetServer
    from test_fleet_ota import HEALTHY_MAIN

    from firmware.tools import bundle as fw_bundle
    from firmware.tools import devicelink, provision
    from firmware.tools.simdevice import SimulatedBoard

    out = tmp_path / "fw"
    manifest = fw_bundle.build(out, march="x64")
    real = provision.load_bundle(out, image=True)
    image = real.files["romfs.img"]
    assert set(real.files) == {"main.py", "romfs.img"}
    assert image == fw_bundle.romfs_paths(out)[0].read_bytes()
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    flash = tmp_path / "flash"
    with FleetServer(fleet.store) as server, \
            SimulatedBoard(flash, unique_id="24a1609c3e58", heapsize="96K", romfs=PART) as board:
        ident = provision.Identity(
            site=SITE, name="counter-2", label="CC-000123", profile="esp32s3-headset",
            mqtt_url="mqtt://127.0.0.1:1883", wifi_ssid="staff", ota_url=server.url)
        result = provision.provision_esp32(board.port, ident, real, fleet, loopback_ok=True,
                                           log=lambda m: None)
        assert result.files["a/romfs.img"] == "written"
        assert partition(flash).read_bytes()[: len(image)] == image
        assert not (flash / "a" / "firmware").exists()  # the code is in the image only
        board.wait_boots(2)
        with devicelink.DeviceLink(board.port) as link:
            assert link.eval_json("__import__('sys').path[:2]") == ["/rom", "a"]
            assert link.eval_json("__import__('firmware.headset.ota').headset.ota.__file__") == (
                "/rom/firmware/headset/ota.mpy")
        assert provision.check_esp32(board.port, real) == []
        again = provision.provision_esp32(board.port, ident, real, fleet, loopback_ok=True,
                                          log=lambda m: None)
        assert again.files["a/romfs.img"] == "same"
        board.wait_boots(3)

        update = fleet.create_update(version="99.0.0", site=SITE, percent=100,
                                     files={"main.py": HEALTHY_MAIN, "romfs.img": image})
        with devicelink.DeviceLink(board.port) as link:
            got = link.exec(
                "from firmware.headset import ota\n"
                "print(ota.__file__, ota.update_from_companion(json.load(open('device.json'))))"
            ).strip()
        assert got == "/rom/firmware/headset/ota.mpy 99.0.0"
        assert partition(flash).read_bytes()[PART // 2: PART // 2 + len(image)] == image
        with devicelink.DeviceLink(board.port) as link:
            link.reset()
        board.wait_boots(4)
        with devicelink.DeviceLink(board.port) as link:
            assert link.exec("import main\nprint(main.RUNNING_FROM)").strip() == "/rom"
            assert link.eval_json("__import__('sys').path[:2]") == ["/rom", "b"]
        p = json.loads((flash / "ota.json").read_text())
        assert (p["active"], p["state"], p["version"]) == ("b", "good", "99.0.0")
        assert fleet.update_summary(str(update["update"]))["counts"]["applied"] == 1
        assert manifest["romfs"]["image_size"] == len(image)


def test_provisioning_with_the_image_needs_a_romfs_partition(tmp_path):
    from firmware.tools import bundle as fw_bundle
    from firmware.tools import provision
    from firmware.tools.simdevice import SimulatedBoard

    out = tmp_path / "fw"
    fw_bundle.build(out, march="x64")
    real = provision.load_bundle(out, image=True)
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    ident = provision.Identity(site=SITE, name="counter-2", label="CC-000123",
                               profile="esp32s3-headset", mqtt_url="mqtt://192.168.1.10:1883",
                               wifi_ssid="staff", ota_url="http://192.168.1.10:8000")
    for size, why in ((0, "the board has no romfs partition"),
                      (0x10000, "half of the board's romfs partition holds 32768")):
        flash = tmp_path / f"flash-{size}"
        with SimulatedBoard(flash, romfs=size) as board:
            with pytest.raises(provision.ProvisionError, match=why):
                provision.provision_esp32(board.port, ident, real, fleet, log=lambda m: None)
        assert not (flash / "device.json").exists() and not (flash / "a").exists()
    assert fleet.inventory() == []
    # a bundle folder without its image is refused up front, with the fix
    fw_bundle.romfs_paths(out)[0].write_bytes(b"\xd2\xcd\x31\x00")
    with pytest.raises(provision.ProvisionError, match="does not match its manifest hash"):
        provision.load_bundle(out, image=True)


def test_provisioning_cut_while_the_image_is_written_is_finished_by_a_rerun(tmp_path,
                                                                            monkeypatch):
    """The USB cable pulled half-way through the image: the board has no identity and no record
    for slot a (nothing half-written is ever mounted), and the same command run again finishes."""
    from firmware.tools import bundle as fw_bundle
    from firmware.tools import devicelink, provision
    from firmware.tools.simdevice import SimulatedBoard

    out = tmp_path / "fw"
    fw_bundle.build(out, march="x64")
    real = provision.load_bundle(out, image=True)
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    ident = provision.Identity(site=SITE, name="counter-2", label="CC-000123",
                               profile="esp32s3-headset", mqtt_url="mqtt://192.168.1.10:1883",
                               wifi_ssid="staff", ota_url="http://192.168.1.10:8000")
    flash = tmp_path / "flash"
    real_exec = devicelink.DeviceLink.exec
    writes = []

    with SimulatedBoard(flash, romfs=PART) as board:
        def cut_mid_image(self, code):
            if code.startswith("seg.writeblocks("):
                writes.append(code)
                if len(writes) == 20:
                    board.kill()
                    raise devicelink.DeviceError("the board stopped answering")
            return real_exec(self, code)

        monkeypatch.setattr(devicelink.DeviceLink, "exec", cut_mid_image)
        with pytest.raises(devicelink.DeviceError):
            provision.provision_esp32(board.port, ident, real, fleet, log=lambda m: None)
        assert not (flash / "device.json").exists() and not (flash / "a" / "romfs.json").exists()
        assert partition(flash).read_bytes()[:1024] == real.files["romfs.img"][:1024]  # begun
        monkeypatch.setattr(devicelink.DeviceLink, "exec", real_exec)
        board.wait_boots(2)
        result = provision.provision_esp32(board.port, ident, real, fleet, log=lambda m: None)
        assert result.files["a/romfs.img"] == "written"
        assert provision.check_esp32(board.port, real) == []
        board.wait_boots(3)
        with devicelink.DeviceLink(board.port) as link:
            assert link.eval_json("__import__('firmware.headset.ota').headset.ota.__file__") == (
                "/rom/firmware/headset/ota.mpy")
