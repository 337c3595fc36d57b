"""Over-the-air updates on the unix-port device: the board is provisioned over its pty, then
fetches signed updates over real HTTP from the fleet routers, switches A/B slots, confirms or
rolls back on the next boot; the companion sees each outcome."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fleet_helpers import FleetServer, make_bundle
from sqlalchemy import update as sql_update

from companion import fleet as fleet_mod
from firmware.tools import devicelink, provision
from firmware.tools.fleet_client import DbFleet
from firmware.tools.simdevice import SimulatedBoard

SITE = "store-042"
UID = "24a1609c3e58"
DEVICE = "cc-" + UID

HEALTHY_MAIN = b"""# v2: healthy; confirms itself once up (a real bundle waits for MQTT + first telemetry)
import sys
from firmware.headset import ota
RUNNING_FROM = sys.path[0]
ota.confirm()
"""
BROKEN_MAIN = b"""# v3: fails its health check before it can confirm
import sys
RUNNING_FROM = sys.path[0]
raise RuntimeError("microphone not found")
"""


@pytest.fixture
def rig(tmp_path: Path):
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    with FleetServer(fleet.store) as server, \
            SimulatedBoard(tmp_path / "flash", unique_id=UID, heapsize="96K") as board:
        ident = provision.Identity(
            site=SITE, name="counter-2", label="CC-000123", profile="esp32s3-headset",
            mqtt_url="mqtt://127.0.0.1:1883", wifi_ssid="staff", wifi_password="",
            ota_url=server.url)
        bundle = provision.load_bundle(
            make_bundle(tmp_path / "v1", "1.0.0", extra={"legacy.py": b"OLD = 1\n"}))
        provision.provision_esp32(board.port, ident, bundle, fleet, loopback_ok=True,
                                  log=lambda m: None)
        board.wait_boots(2)
        yield fleet, server, board, tmp_path


def publish(fleet: DbFleet, tmp_path: Path, version: str, main: bytes, percent: int = 100) -> str:
    root = make_bundle(tmp_path / version, version, main=main)
    files = {p: (root / p).read_bytes()
             for p in json.loads((root / "manifest.json").read_text())["files"]}
    return str(fleet.create_update(version=version, site=SITE, percent=percent,
                                   files=files)["update"])


def device_update(board: SimulatedBoard, url: str) -> str:
    """What the firmware does on an `ota` command, with the identity provisioning wrote (whose
    ota_url is this server); returns the outcome."""
    with devicelink.DeviceLink(board.port) as link:
        return link.exec(
            "from firmware.headset import ota\n"
            "ident = json.load(open('device.json'))\n"
            "try:\n"
            "    print('applied', ota.update_from_companion(ident))\n"
            "except ota.OtaError as e:\n"
            "    print('refused:', e)\n"
        ).strip()


def boot_and_run_main(board: SimulatedBoard, boots: int) -> str:
    """Reset, let the loader pick the slot, run the bundle's main; returns its outcome."""
    with devicelink.DeviceLink(board.port) as link:
        link.reset()
    board.wait_boots(boots)
    with devicelink.DeviceLink(board.port) as link:
        return link.exec(
            "try:\n"
            "    import main\n"
            "    print('main ok from', main.RUNNING_FROM)\n"
            "except Exception as e:\n"
            "    print('main failed:', repr(e))\n"
        ).strip()


def report(board: SimulatedBoard, url: str) -> str:
    with devicelink.DeviceLink(board.port) as link:
        return str(link.eval_json(
            "__import__('firmware.headset.ota').headset.ota.report_outcome(json.load(open('device.json')))"))


def pointer(board: SimulatedBoard) -> dict:
    return json.loads((board.flash / "ota.json").read_text())


def test_good_update_is_applied_and_confirmed(rig):
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    assert device_update(board, server.url) == "applied 2.0.0"
    p = pointer(board)
    assert (p["active"], p["previous"], p["state"]) == ("b", "a", "trial")
    for path, meta in json.loads(fleet.store.manifest(update)[0])["files"].items():
        assert hashlib.sha256((board.flash / "b" / path).read_bytes()).hexdigest() == meta["sha256"]
    assert fleet.update_summary(update)["counts"]["applied"] == 1

    assert boot_and_run_main(board, 3) == "main ok from b"
    assert pointer(board)["state"] == "good"
    assert report(board, server.url) == "confirmed"
    summary = fleet.update_summary(update)
    assert summary["counts"]["confirmed"] == 1 and summary["devices"][0]["device"] == DEVICE
    assert fleet.inventory()[0]["version"] == "2.0.0"
    # a later boot stays on b, and the update is not offered again
    assert boot_and_run_main(board, 4) == "main ok from b"
    assert fleet.store.check(site=SITE, device=DEVICE, version="2.0.0") == {}
    assert device_update(board, server.url) == "applied None"  # nothing offered

    # the next update goes into slot a, cleared of the old bundle first
    publish(fleet, tmp, "2.1.0", HEALTHY_MAIN)
    assert device_update(board, server.url) == "applied 2.1.0"
    assert (pointer(board)["active"], pointer(board)["previous"]) == ("a", "b")
    assert not (board.flash / "a" / "legacy.py").exists()
    assert boot_and_run_main(board, 5) == "main ok from a"
    assert report(board, server.url) == "confirmed"


def test_bad_signature_is_refused(rig):
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    _, sig = fleet.store.manifest(update)
    forged = sig[:-2] + ("00" if sig[-2:] != "00" else "01")
    with fleet.store.engine.begin() as conn:
        conn.execute(sql_update(fleet_mod.updates).where(fleet_mod.updates.c.id == update)
                     .values(signature=forged))
    out = device_update(board, server.url)
    assert out == "refused: manifest signature is not valid for this device's update key"
    assert pointer(board)["active"] == "a" and pointer(board)["state"] == "good"
    assert not (board.flash / "b").exists()
    summary = fleet.update_summary(update)
    assert summary["counts"]["refused"] == 1 and "signature" in summary["devices"][0]["detail"]
    assert boot_and_run_main(board, 3) == "main ok from a"


def test_manifest_signed_by_another_key_is_refused(rig, tmp_path):
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    other = fleet_mod.load_or_create_key(tmp_path / "attacker.pem")
    data, _ = fleet.store.manifest(update)
    with fleet.store.engine.begin() as conn:
        conn.execute(sql_update(fleet_mod.updates).where(fleet_mod.updates.c.id == update)
                     .values(signature=fleet_mod.sign(other, data)))
    assert device_update(board, server.url).startswith("refused: manifest signature is not valid")
    assert pointer(board)["active"] == "a"


def test_file_with_bad_hash_is_refused(rig):
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    with fleet.store.engine.begin() as conn:
        conn.execute(sql_update(fleet_mod.update_files).where(
            fleet_mod.update_files.c.update_id == update,
            fleet_mod.update_files.c.path == "main.py").values(data=BROKEN_MAIN))
    out = device_update(board, server.url)
    assert out.startswith("refused: b/main.py: hash ") and "does not match the signed manifest" in out
    p = pointer(board)
    assert (p["active"], p["state"]) == ("a", "good")
    assert not (board.flash / "b" / "main.py").exists()
    assert not (board.flash / "b" / "main.py.part").exists()
    assert fleet.update_summary(update)["counts"]["refused"] == 1


def test_update_that_fails_its_health_check_rolls_back(rig):
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "3.0.0", BROKEN_MAIN)
    assert device_update(board, server.url) == "applied 3.0.0"
    # first boot of the new bundle: main fails and never confirms
    assert boot_and_run_main(board, 3) == "main failed: RuntimeError('microphone not found',)"
    assert pointer(board)["state"] == "trial"
    # the health deadline / watchdog resets it; the loader goes back to the previous slot
    assert boot_and_run_main(board, 4) == "main ok from a"
    p = pointer(board)
    assert (p["active"], p["state"], p["failed_version"]) == ("a", "rolled_back", "3.0.0")
    assert report(board, server.url) == "rolled_back"
    summary = fleet.update_summary(update)
    assert summary["counts"]["rolled_back"] == 1
    assert fleet.inventory()[0]["version"] == "1.0.0"
    assert fleet.store.check(site=SITE, device=DEVICE, version="1.0.0") == {}  # not retried


def test_update_signed_for_another_site_is_refused(rig):
    fleet, server, board, tmp = rig
    root = make_bundle(tmp / "other", "9.0.0", main=HEALTHY_MAIN)
    files = {p: (root / p).read_bytes()
             for p in json.loads((root / "manifest.json").read_text())["files"]}
    other = fleet.create_update(version="9.0.0", site="store-999", percent=100, files=files)
    with devicelink.DeviceLink(board.port) as link:
        out = link.exec(
            "from firmware.headset import ota\n"
            "try:\n"
            f"    ota.apply(json.load(open('device.json')), {other['update']!r}, ota.load_key())\n"
            "except ota.OtaError as e:\n"
            "    print('refused:', e)\n").strip()
    assert out == f"refused: update {other['update']} is for site store-999, not {SITE}"
    assert pointer(board)["active"] == "a" and pointer(board)["state"] == "good"


def test_older_signed_update_is_refused_anti_rollback(rig):
    """A genuinely signed older bundle, replayed or offered again, would bring back what the
    newer one fixed: the device refuses anything not newer than its confirmed version."""
    fleet, server, board, tmp = rig
    old = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    assert device_update(board, server.url) == "applied 2.0.0"
    assert boot_and_run_main(board, 3) == "main ok from b"
    assert pointer(board)["floor"] == "2.0.0"
    publish(fleet, tmp, "2.1.0", HEALTHY_MAIN)
    assert device_update(board, server.url) == "applied 2.1.0"
    assert boot_and_run_main(board, 4) == "main ok from a"
    with devicelink.DeviceLink(board.port) as link:  # the 2.0.0 update, replayed
        out = link.exec(
            "from firmware.headset import ota\n"
            "ident = json.load(open('device.json'))\n"
            "try:\n"
            f"    print('applied', ota.apply(ident, {old!r}, ota.load_key()))\n"
            "except ota.OtaError as e:\n"
            "    print('refused:', e)\n"
        ).strip()
    assert out == (f"refused: update {old} is version 2.0.0, not newer than 2.1.0 on this device "
                   "(anti-rollback); publish the bundle under a higher version")
    p = pointer(board)
    assert (p["active"], p["state"], p["version"], p["floor"]) == ("a", "good", "2.1.0", "2.1.0")
