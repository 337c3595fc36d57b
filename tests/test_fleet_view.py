"""One device list (issue 15): the fleet inventory, the registry the MQTT ingest fills and the last
telemetry are one record per device, read alike by `calmcue device list`, GET /fleet/inventory,
the IT screen's GET /api/fleet/devices and the dashboard's GET /api/devices; health figures are
flagged at the documented thresholds; a headset's config is confirmed when its telemetry reports
the revision the companion published."""

from __future__ import annotations

import json

import httpx
from companion_helpers import Publisher, running_companion, sqlite_url, wait_until

from calmcue.cli import main
from companion import device_config, fleet, fleet_view, settings_table

SITE = "store-7"


def _record(comp, device: str, name: str) -> None:
    store = fleet.FleetStore(comp.engine, comp.settings.fleet_key_path)
    store.record(device=device, site=SITE, name=name, label=name.upper(),
                 profile="esp32s3-headset", target="esp32", version="1.0.0")


def test_inventory_registry_and_telemetry_are_one_list(tmp_path, mosquitto, capsys):
    with running_companion(sqlite_url(tmp_path), mosquitto.url) as comp:
        pub = Publisher(mosquitto.port)
        # three devices report over MQTT; none was provisioned through the companion yet
        pub.send(f"calmcue/v1/{SITE}/cc-000000000001/tele",
                 {"fw": "1.0.0", "model": "stress-v1", "batt_pct": 6, "rssi": -88, "queue": 42,
                  "heap_free": 12 * 1024, "mic_ok": True, "config_rev": 0})
        pub.send(f"calmcue/v1/{SITE}/cc-000000000002/tele",
                 {"fw": "1.0.0", "model": "stress-v1", "batt_pct": 80, "rssi": -55, "queue": 0,
                  "heap_free": 40 * 1024, "mic_ok": True, "config_rev": 0})
        pub.send(f"calmcue/v1/{SITE}/counter-9/tele",
                 {"agent": "0.1.0", "model": "stress-v1", "mem_kb": 91234, "queue": 0})
        wait_until(lambda: len(httpx.get(comp.url + "/api/devices").json()) == 3, what="registry")
        # one of them is provisioned, and a fourth is provisioned but has never reported
        _record(comp, "cc-000000000002", "counter-2")
        _record(comp, "cc-000000000003", "counter-3")

        ids = {"cc-000000000001", "cc-000000000002", "cc-000000000003", "counter-9"}
        it_list = httpx.get(comp.url + "/api/fleet/devices").json()
        assert {d["device"] for d in it_list} == ids
        assert {d["device"] for d in httpx.get(comp.url + "/api/devices").json()} == ids
        code = main(["device", "list", "--json", "--db", comp.settings.db_url,
                     "--key", str(comp.settings.fleet_key_path)])
        cli = json.loads(capsys.readouterr().out)
        assert code == 0 and {d["device"] for d in cli} == ids
        # the very same records, whichever way they are read
        assert [(d["device"], d["status"], d["in_inventory"]) for d in cli] == [
            (d["device"], d["status"], d["in_inventory"]) for d in it_list]

        by_id = {d["device"]: d for d in it_list}
        bad = by_id["cc-000000000001"]
        assert {f["key"] for f in bad["flags"]} == {"battery", "signal", "queue", "heap"}
        assert bad["heap_free_kb"] == 12.0 and not bad["in_inventory"]
        good = by_id["cc-000000000002"]
        assert good["flags"] == [] and good["label"] == "COUNTER-2" and good["in_registry"]
        assert good["heap_free_kb"] == 40.0 and good["rssi_dbm"] == -55
        never = by_id["cc-000000000003"]
        assert never["status"] == "never seen" and [f["key"] for f in never["flags"]] == [
            "never_seen"]
        assert by_id["counter-9"]["kind"] == "pi" and by_id["counter-9"]["mem_kb"] == 91234

        # `device status` finds a device that was only seen over MQTT, as the list shows it
        code = main(["device", "status", "counter-9", "--db", comp.settings.db_url,
                     "--key", str(comp.settings.fleet_key_path)])
        status = json.loads(capsys.readouterr().out)
        assert code == 0 and status["kind"] == "pi" and status["updates"] == []
        # the table print names every device, with its flags in words
        code = main(["device", "list", "--db", comp.settings.db_url,
                     "--key", str(comp.settings.fleet_key_path)])
        table = capsys.readouterr().out
        assert code == 0 and "counter-9" in table and "battery 6 % (<= 15 %)" in table
        assert "never seen" in table and " s ago" in table
        pub.close()


def test_config_is_confirmed_when_the_device_reports_its_revision(tmp_path, mosquitto):
    with running_companion(sqlite_url(tmp_path), mosquitto.url) as comp:
        pub = Publisher(mosquitto.port)
        dev = f"calmcue/v1/{SITE}/cc-000000000001"
        pub.send(dev + "/tele", {"fw": "1.0.0", "config_rev": 0})
        wait_until(lambda: httpx.get(comp.url + "/api/devices").json(), what="registry")
        url = comp.url + f"/api/fleet/devices/{SITE}/cc-000000000001/config"
        form = httpx.get(url).json()
        assert form["state"] == "defaults"
        assert {r["key"] for r in form["rows"]} == {r["key"] for r in settings_table.rows()}
        assert len([r for r in form["rows"] if r["key"] == "eu_mode"]) == 1

        r = httpx.put(comp.url + f"/api/devices/{SITE}/cc-000000000001/config",
                      json={"brightness": 0.2, "policy": {"cue_budget": 2}})
        assert r.status_code == 200
        form = httpx.get(url).json()
        want = device_config.payload_rev(form["payload"])
        assert form["state"] == "pending" and form["expected_rev"] == want
        rows = {r["key"]: r for r in form["rows"]}
        assert rows["cue_budget"]["effective"] == 2 and rows["cue_budget"]["default"] == 4
        assert rows["cue_budget"]["lo"] == 0 and rows["cue_budget"]["hi"] == 50
        assert rows["brightness"]["device_value"] == 0.2 and rows["haptic"]["set"] is False

        pub.send(dev + "/tele", {"fw": "1.0.0", "config_rev": want + 1})  # not what was sent
        comp.ingest.flush()
        assert httpx.get(url).json()["state"] == "pending"
        pub.send(dev + "/tele", {"fw": "1.0.0", "config_rev": want})
        comp.ingest.flush()
        wait_until(lambda: httpx.get(url).json()["state"] == "confirmed", what="confirmed")
        rec = fleet_view.device_records(comp.engine)[0]
        assert rec["config_state"] == "confirmed"

        # a headset that refuses (as firmware/headset/app.py answers on state/result) is not "waiting"
        httpx.put(comp.url + f"/api/devices/{SITE}/cc-000000000001/config",
                  json={"brightness": 0.3})
        assert httpx.get(url).json()["state"] == "pending"
        pub.send(dev + "/state/result", {"cmd": "config", "ok": False, "up_ms": 5, "rev": want,
                                          "detail": "not enough memory on the device to check "
                                                    "this config; nothing changed"})
        wait_until(lambda: httpx.get(url).json()["state"] == "refused", what="refused")
        assert "not enough memory" in httpx.get(url).json()["detail"]
        (rec,) = httpx.get(comp.url + "/api/fleet/devices").json()
        assert [f["key"] for f in rec["flags"]] == ["config_refused"]

        # a Pi agent reports no revision: its answer after the last send confirms or refuses
        pi = f"calmcue/v1/{SITE}/counter-9"
        pub.send(pi + "/tele", {"agent": "0.1.0", "model": "stress-v1"})
        wait_until(lambda: len(httpx.get(comp.url + "/api/devices").json()) == 2, what="pi")
        pi_url = comp.url + f"/api/fleet/devices/{SITE}/counter-9/config"
        assert httpx.get(pi_url).json()["state"] == "unknown"
        httpx.put(comp.url + f"/api/devices/{SITE}/counter-9/config", json={"haptic": 0.5})
        assert httpx.get(pi_url).json()["state"] == "pending"
        pub.send(pi + "/state/result", {"cmd": "config", "ok": True, "applies": "live"})
        wait_until(lambda: httpx.get(pi_url).json()["state"] == "confirmed", what="pi confirmed")
        httpx.put(comp.url + f"/api/devices/{SITE}/counter-9/config", json={"haptic": 0.6})
        pub.send(pi + "/state/result", {"cmd": "config", "ok": False,
                                        "errors": ["outputs.haptic_strength must be 0..1"]})
        wait_until(lambda: httpx.get(pi_url).json()["state"] == "refused", what="pi refused")
        assert httpx.get(pi_url).json()["detail"] == "outputs.haptic_strength must be 0..1"
        pub.close()


def test_rollout_without_devices_is_listed_with_its_progress(tmp_path, mosquitto):
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="development",
                           admin_password="it-pass-123", admin_user="root") as comp:
        store = comp.app.state.fleet_store
        store.create_update(version="2.0.0", site="store-empty", percent=100,
                            files={"main.py": b"print(2)\n"})
        s = httpx.Client(base_url=comp.url)
        s.post("/api/login", data={"username": "root", "password": "it-pass-123"})
        (u,) = s.get("/api/fleet/rollouts").json()
        assert u["no_devices"] and u["targets"] == 0 and u["done"] == 0
