"""Provisioning end to end against the real MicroPython unix port on a pseudo-terminal: the tool
opens the pty's path with pyserial and drives the raw REPL exactly as it drives a USB board."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_helpers import make_bundle, sha256_file

from firmware.tools import devicelink, provision
from firmware.tools.fleet_client import DbFleet
from firmware.tools.simdevice import SimulatedBoard

UID = "24a1609c3e58"
DEVICE = "cc-24a1609c3e58"


@pytest.fixture
def board(tmp_path: Path):
    with SimulatedBoard(tmp_path / "flash", unique_id=UID) as b:
        yield b


@pytest.fixture
def fleet(tmp_path: Path) -> DbFleet:
    return DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")


@pytest.fixture
def bundle(tmp_path: Path) -> provision.Bundle:
    return provision.load_bundle(make_bundle(tmp_path / "bundle"))


def ident(**kw) -> provision.Identity:
    base = dict(site="store-042", name="counter-2", label="CC-000123", profile="esp32s3-headset",
                mqtt_url="mqtt://192.168.1.10:1883", wifi_ssid="store-042-staff",
                wifi_password="correct horse battery", ota_url="http://192.168.1.10:8000",
                settings={"brightness": 0.5})
    base.update(kw)
    return provision.Identity(**base)


def flash_files(board: SimulatedBoard) -> set[str]:
    return {str(p.relative_to(board.flash)) for p in board.flash.rglob("*")
            if p.is_file() and p.name != ".sim_startup.py"}


def test_provision_end_to_end(board, fleet, bundle):
    result = provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    assert result.device == DEVICE
    # every bundle file landed in slot a with the right hash (checked here from the flash
    # folder, independently of the tool's own on-device check)
    for rel, data in bundle.files.items():
        import hashlib

        assert sha256_file(board.flash / "a" / rel) == hashlib.sha256(data).hexdigest(), rel
    doc = json.loads((board.flash / "device.json").read_text())
    assert doc["device"] == DEVICE and doc["site"] == "store-042" and doc["name"] == "counter-2"
    assert doc["mqtt"]["user"] == DEVICE and len(doc["mqtt"]["password"]) >= 20
    assert (doc["mqtt"]["host"], doc["mqtt"]["port"]) == ("192.168.1.10", 1883)
    assert doc["wifi"] == {"ssid": "store-042-staff", "password": "correct horse battery"}
    assert json.loads((board.flash / "config.json").read_text()) == {"brightness": 0.5}
    assert json.loads((board.flash / "ota.json").read_text())["active"] == "a"
    assert not [f for f in flash_files(board) if f.endswith((".part", ".tmp"))]
    # the inventory ties the factory label to the chip-derived id
    (row,) = fleet.inventory()
    assert (row["label"], row["device"], row["version"]) == ("CC-000123", DEVICE, "1.0.0")
    # it rebooted, the A/B loader ran and put slot a first; the bundle's main imports from there
    board.wait_boots(2)
    with devicelink.DeviceLink(board.port) as link:
        assert link.eval_json("__import__('sys').path[0]") == "a"
        assert link.eval_json("__import__('main').RUNNING_FROM") == "a"


def test_bad_configuration_is_refused_before_anything_is_written(board, fleet, bundle):
    bad = ident(site="Store 42", wifi_password="short", mqtt_url="mqtt://127.0.0.1:1883",
                settings={"brightness": 3, "colour": "red",
                          "policy": {"stress_treshold": 0.7}})
    with pytest.raises(provision.ProvisionError) as err:
        provision.provision_esp32(board.port, bad, bundle, fleet, log=lambda m: None)
    text = str(err.value)
    assert "site must be 1-32 chars" in text and "'store-042'" in text
    assert "WPA2 needs 8-63 characters" in text
    assert "loopback address, which the device cannot reach" in text
    assert "settings: brightness is 3; choose a value between 0 and 1" in text
    assert "settings: colour is not a config key" in text
    assert "settings: unknown setting 'stress_treshold'; did you mean 'stress_threshold'?" in text
    assert flash_files(board) == set()
    assert fleet.inventory() == []


def test_tampered_file_is_detected_and_repaired_on_rerun(board, fleet, bundle):
    provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    board.wait_boots(2)
    target = board.flash / "a" / "firmware" / "core" / "events.py"
    target.write_bytes(target.read_bytes().replace(b"MAX_BYTES = const(512)", b"MAX_BYTES = const(99999)"))
    problems = provision.check_esp32(board.port, bundle)
    assert len(problems) == 1 and problems[0].startswith("a/firmware/core/events.py: SHA-256 on the device")
    result = provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    assert result.files["a/firmware/core/events.py"] == "rewritten (changed on the device)"
    assert result.files["a/main.py"] == "same"
    assert provision.check_esp32(board.port, bundle) == []


def test_damage_in_transit_is_caught_on_the_device(board, fleet, bundle, monkeypatch):
    real_send = devicelink.DeviceLink._send

    def flip_one_byte(self, path, data, chunk):
        if path == "a/firmware/core/events.py.part":
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        real_send(self, path, data, chunk)

    monkeypatch.setattr(devicelink.DeviceLink, "_send", flip_one_byte)
    with pytest.raises(devicelink.DeviceError, match="damaged on the way"):
        provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    assert not (board.flash / "a" / "firmware" / "core" / "events.py").exists()
    assert not (board.flash / "a" / "firmware" / "core" / "events.py.part").exists()
    assert not (board.flash / "device.json").exists()


def test_interrupted_provisioning_can_be_rerun(board, fleet, bundle, monkeypatch):
    real_send = devicelink.DeviceLink._send
    calls = []

    def power_cut_mid_file(self, path, data, chunk):
        calls.append(path)
        if path == "a/firmware/core/events.py.part":
            # half the file is on flash, then the USB cable is pulled: the board loses power
            self.exec(f"f=open({path!r},'wb')\nf.write({data[: len(data) // 2]!r})\nf.close()")
            board.kill()
            raise devicelink.DeviceError("the board stopped answering")
        real_send(self, path, data, chunk)

    monkeypatch.setattr(devicelink.DeviceLink, "_send", power_cut_mid_file)
    with pytest.raises(devicelink.DeviceError):
        provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    assert not (board.flash / "device.json").exists()  # not half-provisioned: no identity yet
    assert not (board.flash / "a" / "firmware" / "core" / "events.py").exists()
    assert (board.flash / "a" / "firmware" / "core" / "events.py.part").exists()  # the half-written file
    monkeypatch.setattr(devicelink.DeviceLink, "_send", real_send)
    board.wait_boots(2)
    result = provision.provision_esp32(board.port, ident(), bundle, fleet, log=lambda m: None)
    assert result.files["a/firmware/__init__.py"] == "same"  # kept from the first attempt
    assert result.files["a/firmware/core/events.py"] == "written"
    assert provision.check_esp32(board.port, bundle) == []
    assert (board.flash / "device.json").exists()


def test_real_firmware_bundle_provisions_and_imports_from_its_slot(board, fleet, tmp_path):
    """The bundle `make firmware` writes (compiled for the host here, so the unix port can
    import its .mpy files) goes on as-is: every file verified, modules load from slot a."""
    from firmware.tools import bundle as fw_bundle

    out = tmp_path / "fw"
    manifest = fw_bundle.build(out, march="x64")
    real = provision.load_bundle(out)
    assert real.version == manifest["version"] and set(real.files) == set(manifest["files"])
    provision.provision_esp32(board.port, ident(), real, fleet, log=lambda m: None)
    for rel, meta in manifest["files"].items():
        assert sha256_file(board.flash / "a" / rel) == meta["sha256"], rel
    board.wait_boots(2)
    with devicelink.DeviceLink(board.port) as link:
        assert link.eval_json("__import__('firmware.headset.ota').headset.ota.__file__").startswith("a/")
        assert link.eval_json("__import__('firmware.core.events').core.events.SCHEMA_VERSION") == 1


def test_mqtts_headset_gets_the_broker_ca_on_flash(board, fleet, bundle, tmp_path):
    """The headset checks the broker's certificate (tests/test_fw_tls.py): provisioning writes
    the CA as ca.der and names it in device.json; mqtts:// without one is refused up front."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from test_agent_tls import _cert, _pem

    with pytest.raises(provision.ProvisionError) as err:
        provision.provision_esp32(board.port, ident(mqtt_url="mqtts://192.168.1.10:8883"),
                                  bundle, fleet, log=lambda m: None)
    assert "pass --mqtt-ca FILE" in str(err.value) and flash_files(board) == set()
    ca = _cert("store CA", ec.generate_private_key(ec.SECP256R1()), ca=True)
    der = provision.read_ca(Path(_pem(tmp_path / "ca.pem", ca)))
    assert der == ca.public_bytes(serialization.Encoding.DER)
    provision.provision_esp32(board.port, ident(mqtt_url="mqtts://192.168.1.10:8883", mqtt_ca=der),
                              bundle, fleet, log=lambda m: None)
    doc = json.loads((board.flash / "device.json").read_text())
    assert doc["mqtt"]["ssl"] is True and doc["mqtt"]["ca"] == "ca.der"
    assert (board.flash / "ca.der").read_bytes() == der


def test_a_cluster_s_nodes_become_the_headset_s_fallback_list():
    """`--mqtt URL1,URL2,URL3` (a clustered broker, docs/cluster.md): the first node in
    device.json's mqtt.host/port, the others in mqtt.fallback for firmware/headset/net.py to fail over
    between; mixed schemes refused."""
    many = ident(mqtt_url="mqtt://10.0.0.1:1883, mqtt://10.0.0.2:1884,mqtt://10.0.0.3")
    assert provision.validate(many, target="esp32") == []
    doc = provision.device_document(many, DEVICE, {"username": DEVICE, "password": "pw"})
    assert (doc["mqtt"]["host"], doc["mqtt"]["port"]) == ("10.0.0.1", 1883)
    assert doc["mqtt"]["fallback"] == [["10.0.0.2", 1884], ["10.0.0.3", 1883]]
    one = provision.device_document(ident(), DEVICE, {"username": DEVICE, "password": "pw"})
    assert "fallback" not in one["mqtt"]
    mixed = ident(mqtt_url="mqtt://10.0.0.1:1883,mqtts://10.0.0.2:8883")
    assert any("all be mqtt:// or all mqtts://" in p for p in provision.validate(mixed, target="esp32"))
