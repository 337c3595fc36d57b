"""The companion's /fleet API (companion/fleet.py) through HttpFleet, the client the IT commands
use with --companion; staged roll-out; the device's signature check against `cryptography`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from companion import fleet
from firmware import ota
from firmware.tools.fleet_client import FleetClientError, HttpFleet

SITE = "store-042"


@pytest.fixture
def store(tmp_path: Path) -> fleet.FleetStore:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    fleet.create_tables(engine)
    return fleet.FleetStore(engine, tmp_path / "key.pem")


@pytest.fixture
def client(store) -> TestClient:
    app = FastAPI()
    app.include_router(fleet.it_router(store))
    app.include_router(fleet.device_router(store))
    return TestClient(app)


def test_inventory_and_accounts_over_http(client):
    api = HttpFleet("http://testserver", client=client)
    api.record(device="cc-000000000001", site=SITE, name="counter-1", label="CC-1",
               profile="esp32s3-headset", target="esp32", version="1.0.0")
    with pytest.raises(FleetClientError, match="already recorded for device cc-000000000001"):
        api.record(device="cc-000000000002", site=SITE, name="counter-2", label="CC-1",
                   profile="esp32s3-headset", target="esp32", version="1.0.0")
    assert [(r["label"], r["health"]) for r in api.inventory()] == [("CC-1", None)]
    assert api.device("cc-000000000009") is None
    creds = api.mqtt_account(site=SITE, device="cc-000000000001")
    files = api.broker_files()
    assert files["passwd"].startswith("cc-000000000001:$7$")
    assert creds["password"] not in files["passwd"]
    key = api.public_key()
    assert key["e"] == 65537 and len(key["n"]) == 512  # RSA-2048


def test_update_published_and_status_over_http(client, store):
    api = HttpFleet("http://testserver", client=client)
    up = api.create_update(version="2.0.0", site=SITE, percent=100,
                           files={"main.py": b"print(2)\n"})
    manifest = client.get(f"/fleet/ota/updates/{up['update']}/manifest").content
    sig = bytes.fromhex(client.get(f"/fleet/ota/updates/{up['update']}/signature").text)
    key = api.public_key()
    assert ota.verify(manifest, sig, (int(key["n"], 16), key["e"]))
    assert json.loads(manifest)["files"]["main.py"]["size"] == 9
    assert client.get(f"/fleet/ota/updates/{up['update']}/files/main.py").content == b"print(2)\n"
    assert client.get("/fleet/ota/check", params={"site": SITE, "device": "cc-1"}).json() == {
        "update": up["update"], "version": "2.0.0"}
    r = client.post("/fleet/ota/report", json={"site": SITE, "device": "cc-1",
                                                "update": up["update"], "state": "confirmed"})
    assert r.status_code == 200
    assert api.update_summary(up["update"])["counts"]["confirmed"] == 1
    bad = client.post("/fleet/ota/report", json={"site": SITE, "device": "cc-1",
                                                  "update": up["update"], "state": "great"})
    assert bad.status_code == 409


def test_unsafe_bundle_paths_are_refused(client):
    api = HttpFleet("http://testserver", client=client)
    with pytest.raises(FleetClientError, match="must be relative"):
        api.create_update(version="x", site=SITE, percent=100, files={"../boot.py": b""})


def test_staged_rollout_offers_a_stable_share_of_the_site(store):
    up = store.create_update(version="2.0.0", site=SITE, percent=25, files={"main.py": b"x"})
    devices = [f"cc-{i:012x}" for i in range(200)]

    def offered() -> set[str]:
        return {d for d in devices if store.check(site=SITE, device=d, version="1.0.0")}

    first = offered()
    assert 25 <= len(first) <= 75  # about a quarter of 200
    assert all(fleet.in_rollout(up["update"], d, 25) for d in first)
    store.set_rollout(up["update"], percent=60)
    wider = offered()
    assert first < wider and 90 <= len(wider) <= 150  # widening keeps the first wave in
    store.set_rollout(up["update"], state="paused")
    assert offered() == set()
    store.set_rollout(up["update"], state="active", percent=100)
    assert offered() == set(devices)
    assert store.check(site="store-999", device=devices[0], version="1.0.0") == {}
    assert store.check(site=SITE, device=devices[0], version="2.0.0") == {}  # already on it


def test_device_signature_check_agrees_with_cryptography(tmp_path):
    key = fleet.load_or_create_key(tmp_path / "k.pem")
    pub = fleet.public_key_json(key)
    n, e = int(pub["n"], 16), pub["e"]
    msg = b'{"update":"u1","files":{}}'
    sig = bytes.fromhex(fleet.sign(key, msg))
    assert ota.verify(msg, sig, (n, e))
    assert not ota.verify(msg + b" ", sig, (n, e))
    assert not ota.verify(msg, sig[:-1] + bytes([sig[-1] ^ 1]), (n, e))
    assert not ota.verify(msg, sig[:-1], (n, e))
    other = fleet.public_key_json(fleet.load_or_create_key(tmp_path / "other.pem"))
    assert not ota.verify(msg, sig, (int(other["n"], 16), other["e"]))


def test_mounted_in_the_companion_behind_it_role(tmp_path):
    """companion/app.py mounts the fleet routers: IT/admin tokens only; devices need none."""
    from companion import users
    from companion.app import create_app
    from companion.config import Settings

    settings = Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", mqtt_url=None,
                        fleet_key_path=str(tmp_path / "key.pem"))
    app = create_app(settings)
    with TestClient(app) as http:
        engine = app.state.engine
        users.create_user(engine, username="it1", password="it-password-123", role="it")
        users.create_user(engine, username="mgr", password="mgr-password-123", role="manager",
                          sites=[SITE])
        it_token = users.create_token(engine, "it1")
        mgr_token = users.create_token(engine, "mgr")

        anonymous = HttpFleet("http://testserver", client=http)
        with pytest.raises(FleetClientError, match="companion refused GET /fleet/inventory"):
            anonymous.inventory()
        http.headers["Authorization"] = f"Bearer {mgr_token}"
        with pytest.raises(FleetClientError):
            anonymous.inventory()
        http.headers["Authorization"] = f"Bearer {it_token}"
        it = HttpFleet("http://testserver", client=http)
        it.record(device="cc-000000000001", site=SITE, name="counter-1", label="CC-1",
                  profile="esp32s3-headset", target="esp32", version="1.0.0")
        # provisioning through the API also puts the device in the companion's registry, and
        # the inventory shows the registry's health next to the label
        (row,) = it.inventory()
        assert row["label"] == "CC-1" and row["health"]["status"] == "unknown"
        assert it.device("cc-000000000001")["health"]["device"] == "cc-000000000001"
        up = it.create_update(version="2.0.0", site=SITE, percent=100, files={"main.py": b"x"})
        del http.headers["Authorization"]
        offered = http.get("/fleet/ota/check", params={"site": SITE, "device": "cc-000000000001"})
        assert offered.json()["update"] == up["update"]


def test_rollback_pauses_the_bad_update_and_republishes_the_previous(client, store):
    api = HttpFleet("http://testserver", client=client)
    with pytest.raises(FleetClientError, match="no earlier update to go back to"):
        first = api.create_update(version="1.0.0", site=SITE, percent=100,
                                  files={"main.py": b"v1"})
        api.rollback(first["update"])
    bad = api.create_update(version="2.0.0", site=SITE, percent=100, files={"main.py": b"v2"})
    back = api.rollback(bad["update"])
    assert back["version"] == "1.0.0" and back["update"] not in (first["update"], bad["update"])
    assert api.update_summary(bad["update"])["state"] == "paused"
    assert store.file(back["update"], "main.py") == b"v1"
    # devices on the bad version get the old one back; devices that never left it are untouched
    assert store.check(site=SITE, device="cc-1", version="2.0.0") == {
        "update": back["update"], "version": "1.0.0"}
    assert store.check(site=SITE, device="cc-2", version="1.0.0") == {}
