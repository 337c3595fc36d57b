"""The companion's /fleet API (companion/fleet.py) through HttpFleet, the client the IT commands
use with --companion; staged roll-out; the device's signature check against `cryptography`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from companion import fleet
from firmware.headset import ota
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
    api.record(device="cc-1", site=SITE, name="counter-1", label="CC-1",
               profile="esp32s3-headset", target="esp32", version="1.0.0")
    key = api.report_key("cc-1")
    r = post_report(client, key, "cc-1", {"site": SITE, "device": "cc-1",
                                          "update": up["update"], "state": "confirmed"})
    assert r.status_code == 200
    assert api.update_summary(up["update"])["counts"]["confirmed"] == 1
    bad = post_report(client, key, "cc-1", {"site": SITE, "device": "cc-1",
                                            "update": up["update"], "state": "great"})
    assert bad.status_code == 409


def post_report(client, key: str, signer: str, body: dict, tamper=None):
    """A device report as firmware/headset/ota.py sends it: the body, its HMAC under the report key."""
    raw = json.dumps(body).encode()
    mac = ota.hmac_sha256(bytes.fromhex(key), raw).hex()
    if tamper is not None:
        raw = tamper(raw)
    return client.post("/fleet/ota/report", content=raw,
                       headers={"X-Calmcue-Device": signer, "X-Calmcue-Signature": mac})


def test_device_reports_need_the_devices_own_key(client, store):
    """Before: anyone could POST a report and mark an update confirmed (its roll-out to that
    device stopped). Now: only the device itself, with the key from its provisioning, and only
    forward; every refused report leaves the status as it was."""
    import hmac as std_hmac

    for dev, site in (("cc-a", SITE), ("cc-b", SITE), ("cc-x", "store-999")):
        store.record(device=dev, site=site, name=dev, label=dev.upper(), profile="esp32s3-headset",
                     target="esp32", version="1.0.0")
    up = store.create_update(version="2.0.0", site=SITE, percent=100, files={"main.py": b"x"})
    other = store.create_update(version="2.0.0", site="store-999", percent=100,
                                files={"main.py": b"x"})
    key_a, key_b, key_x = (store.report_key(d) for d in ("cc-a", "cc-b", "cc-x"))
    assert len({key_a, key_b, key_x}) == 3
    # the device's HMAC is the standard one
    assert ota.hmac_sha256(b"k" * 32, b"m") == std_hmac.new(b"k" * 32, b"m", "sha256").digest()
    rep = {"site": SITE, "device": "cc-a", "update": up["update"], "state": "confirmed"}

    def status() -> list:
        return [(d["device"], d["state"]) for d in store.update_summary(up["update"])["devices"]]

    unsigned = client.post("/fleet/ota/report", json=rep)
    assert unsigned.status_code == 401 and "signed" in unsigned.json()["detail"]
    assert post_report(client, "00" * 32, "cc-a", rep).status_code == 401  # a guessed key
    assert post_report(client, key_a, "cc-nobody", rep).status_code == 401  # not in inventory
    assert post_report(client, key_b, "cc-a", rep).status_code == 401  # B's key, A's name
    tampered = post_report(client, key_a, "cc-a", {**rep, "state": "applied"},
                           tamper=lambda raw: raw.replace(b"applied", b"confirmed"))
    assert tampered.status_code == 401
    assert post_report(client, key_b, "cc-b", rep).status_code == 403  # B reporting as A
    assert post_report(client, key_x, "cc-x", {**rep, "site": "store-999", "device": "cc-x"}
                       ).status_code == 403  # an update of another site
    assert post_report(client, key_a, "cc-a", {**rep, "update": other["update"]}
                       ).status_code == 403
    assert post_report(client, key_a, "cc-a", {"device": "cc-a"}).status_code == 422
    assert status() == []  # nothing above changed anything

    assert post_report(client, key_a, "cc-a", {**rep, "state": "applied"}).status_code == 200
    assert post_report(client, key_a, "cc-a", rep).status_code == 200
    assert status() == [("cc-a", "confirmed")]
    # a captured earlier report, replayed, cannot move the status back; a retry changes nothing
    replay = post_report(client, key_a, "cc-a", {**rep, "state": "applied"})
    assert replay.status_code == 409 and "cannot change that to applied" in replay.json()["detail"]
    assert post_report(client, key_a, "cc-a", rep).status_code == 200
    assert status() == [("cc-a", "confirmed")]
    # re-provisioning gives the device a new key; the old one stops working
    store.record(device="cc-a", site=SITE, name="cc-a", label="CC-A", profile="esp32s3-headset",
                 target="esp32", version="2.0.0")
    assert store.report_key("cc-a") != key_a
    assert post_report(client, key_a, "cc-a", {**rep, "state": "rolled_back"}).status_code == 401


def test_update_offer_is_signed_for_the_device_and_its_nonce(client, store, tmp_path):
    store.create_update(version="2.0.0", site=SITE, percent=100, files={"main.py": b"x"})
    pub = fleet.public_key_json(store.key)
    key = (int(pub["n"], 16), pub["e"])
    got = client.get("/fleet/ota/check", params={"site": SITE, "device": "cc-1",
                                                 "version": "1.0.0", "nonce": "ab" * 8}).json()
    assert ota.verify(got["offer"].encode(), bytes.fromhex(got["sig"]), key)
    offer = json.loads(got["offer"])
    assert offer == {"v": 1, "site": SITE, "device": "cc-1", "nonce": "ab" * 8,
                     "update": offer["update"], "version": "2.0.0"}
    none = client.get("/fleet/ota/check", params={"site": SITE, "device": "cc-1",
                                                  "version": "2.0.0", "nonce": "cd" * 8}).json()
    assert json.loads(none["offer"])["update"] is None  # "nothing for you" is signed too
    assert ota.verify(none["offer"].encode(), bytes.fromhex(none["sig"]), key)
    bad = client.get("/fleet/ota/check", params={"site": SITE, "device": "cc-1",
                                                 "nonce": "not hex"})
    assert bad.status_code == 422


def test_unsafe_bundle_paths_are_refused(client):
    api = HttpFleet("http://testserver", client=client)
    with pytest.raises(FleetClientError, match="must be relative"):
        api.create_update(version="1.0.0", site=SITE, percent=100, files={"../boot.py": b""})


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
    # devices refuse to go below their confirmed version (anti-rollback), so the old files go
    # out under a version just above the bad one
    assert (back["version"], back["content_of"]) == ("2.0.0.1", "1.0.0")
    assert back["update"] not in (first["update"], bad["update"])
    assert api.update_summary(bad["update"])["state"] == "paused"
    assert store.file(back["update"], "main.py") == b"v1"
    # devices on the bad version get the old one back; devices that never left it are untouched
    assert store.check(site=SITE, device="cc-1", version="2.0.0") == {
        "update": back["update"], "version": "2.0.0.1"}
    assert store.check(site=SITE, device="cc-2", version="1.0.0") == {}
    again = api.rollback(back["update"])  # and once more: still above everything published
    assert (again["version"], again["content_of"]) == ("2.0.0.2", "2.0.0")


def test_versions_only_go_up_per_site(store):
    store.create_update(version="2.0.0", site=SITE, percent=100, files={"main.py": b"x"})
    for older in ("2.0.0", "1.9.9", "2.0"):
        with pytest.raises(fleet.FleetError, match="already has version 2.0.0"):
            store.create_update(version=older, site=SITE, percent=100, files={"main.py": b"x"})
    with pytest.raises(fleet.FleetError, match="not of the form x.y.z"):
        store.create_update(version="2.1.0-beta", site=SITE, percent=100, files={"main.py": b"x"})
    store.create_update(version="2.0.0", site="store-999", percent=100, files={"main.py": b"x"})
    assert store.create_update(version="2.0.1", site=SITE, percent=100,
                               files={"main.py": b"x"})["version"] == "2.0.1"
    # an offer is only for a device below the version; 2.0.10 is above 2.0.9 (numbers)
    assert store.check(site=SITE, device="cc-1", version="2.0.1") == {}
    assert store.check(site=SITE, device="cc-1", version="3.0.0") == {}
    store.create_update(version="2.0.10", site=SITE, percent=100, files={"main.py": b"x"})
    assert store.check(site=SITE, device="cc-1", version="2.0.9")["version"] == "2.0.10"
