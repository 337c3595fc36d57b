"""The update key reaches a headset with provisioning, over the serial link, from a file IT
brings from the companion host, never fetched (issue 16 item 11): a key served over plain HTTP
could be anyone's, and the device would trust it for every update. A simulated board (the real
MicroPython unix port on a pty) and the companion's real fleet API (FastAPI TestClient)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_helpers import make_bundle

from calmcue.cli import main
from companion import fleet
from firmware.tools import provision
from firmware.tools.fleet_client import DbFleet, HttpFleet
from firmware.tools.simdevice import SimulatedBoard

UID = "24a1609c3e59"


@pytest.fixture
def store(tmp_path: Path) -> fleet.FleetStore:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    fleet.create_tables(engine)
    return fleet.FleetStore(engine, tmp_path / "signing.pem")


@pytest.fixture
def api(store) -> HttpFleet:
    app = FastAPI()
    app.include_router(fleet.it_router(store))
    return HttpFleet("http://testserver", client=TestClient(app))


def ident() -> provision.Identity:
    return provision.Identity(
        site="store-042", name="headset-1", label="CC-000321", profile="esp32s3-headset",
        mqtt_url="mqtt://192.168.1.10:1883", wifi_ssid="staff", wifi_password="correct horse",
        ota_url="http://192.168.1.10:8000")  # fmt: skip


def export(capsys, key_pem: Path, out: Path) -> dict:
    assert main(["device", "ota-key", "--key", str(key_pem), "--out", str(out)]) == 0
    assert "update key " in capsys.readouterr().err
    return json.loads(out.read_text())


class InTheMiddle(HttpFleet):
    """The companion's API as seen through someone who swaps the key in its answer."""

    def __init__(self, real: HttpFleet, key: dict):
        self.http, self.key = real.http, key

    def public_key(self) -> dict:
        return self.key


def test_the_key_comes_from_the_file_over_serial_not_from_the_network(
    tmp_path, capsys, store, api
):
    bundle = provision.load_bundle(make_bundle(tmp_path / "bundle"))
    key_file = tmp_path / "ota_key.json"
    store.key  # noqa: B018  (the companion creates its signing key on first use)
    exported = export(capsys, store.key_path, key_file)
    assert exported == fleet.public_key_json(store.key)
    attacker = fleet.public_key_json(fleet.load_or_create_key(tmp_path / "attacker.pem"))
    (tmp_path / "attacker.json").write_text(json.dumps(attacker))

    with SimulatedBoard(tmp_path / "flash", unique_id=UID) as board:
        # Over the companion's API without the file: refused before the board is touched.
        with pytest.raises(provision.ProvisionError, match="--ota-key FILE is required"):
            provision.provision_esp32(board.port, ident(), bundle, api, log=lambda m: None)
        # Someone between the laptop and the companion swaps the key: the file wins, and the
        # mismatch stops provisioning with both fingerprints.
        with pytest.raises(provision.ProvisionError, match="fingerprint") as swapped:
            provision.provision_esp32(board.port, ident(), bundle, InTheMiddle(api, attacker),
                                      ota_key=key_file, log=lambda m: None)  # fmt: skip
        assert provision.key_fingerprint(attacker) in str(swapped.value)
        # The wrong file (another companion's key): refused the same way.
        with pytest.raises(provision.ProvisionError, match="another companion"):
            provision.provision_esp32(board.port, ident(), bundle, api,
                                      ota_key=tmp_path / "attacker.json", log=lambda m: None)
        assert not (board.flash / "ota_key.json").exists()
        assert not (board.flash / "device.json").exists()
        assert store.inventory() == []

        logs: list[str] = []
        result = provision.provision_esp32(board.port, ident(), bundle, api, ota_key=key_file,
                                           reboot=False, log=logs.append)  # fmt: skip
        assert json.loads((board.flash / "ota_key.json").read_text()) == exported
        assert f"update key {provision.key_fingerprint(exported)} from {key_file}" in logs
        assert [r["device"] for r in store.inventory()] == [result.device]


def test_a_bad_key_file_or_a_missing_signing_key_is_a_clear_error(tmp_path, capsys):
    code = main(["device", "ota-key", "--key", str(tmp_path / "none.pem")])
    assert code == 2 and "no signing key at" in capsys.readouterr().err
    (tmp_path / "junk.pem").write_text("not a key")
    code = main(["device", "ota-key", "--key", str(tmp_path / "junk.pem")])
    assert code == 2 and "not the companion's signing key" in capsys.readouterr().err
    assert not (tmp_path / "none.pem").exists()  # never created here

    for text, why in (("{", "--ota-key"), ('{"alg": "rsa-pkcs1v15-sha256", "n": "ab", "e": 3}',
                                            "not an update key")):  # fmt: skip
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(provision.ProvisionError, match=why):
            provision.read_update_key(bad)


def test_cli_with_companion_url_needs_the_file_and_db_reads_the_local_key(tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.delenv("CALMCUE_COMPANION_URL", raising=False)
    monkeypatch.delenv("CALMCUE_DB_URL", raising=False)
    bundle = make_bundle(tmp_path / "bundle")
    common = ["device", "provision", "--site", "store-042", "--name", "headset-1",
              "--wifi", "staff", "--wifi-password", "correct horse", "--mqtt",
              "mqtt://192.168.1.10:1883", "--ota-url", "http://192.168.1.10:8000",
              "--bundle", str(bundle), "--no-reboot"]  # fmt: skip
    with SimulatedBoard(tmp_path / "flash", unique_id=UID) as board:
        # No companion listens on port 9: the refusal comes before any request.
        code = main([*common, "--port", board.port, "--companion", "http://127.0.0.1:9"])
        assert code == 2 and "--ota-key FILE is required" in capsys.readouterr().err
        # --db: the fleet records and the signing key are on this machine; no file needed.
        db = ["--db", f"sqlite:///{tmp_path / 'f.db'}", "--key", str(tmp_path / "k.pem")]
        assert main([*common, "--port", board.port, *db]) == 0, capsys.readouterr().err
        local = DbFleet(db[1], key_path=tmp_path / "k.pem").public_key()
        assert json.loads((board.flash / "ota_key.json").read_text()) == local
