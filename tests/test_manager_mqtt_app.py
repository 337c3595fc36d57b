"""docs/manager.md, "From any MQTT app", as written: IT makes a site account for a manager's
phone; with it, an MQTT app on a real Mosquitto (password file and ACL generated from the
registry) follows the store's alerts, acknowledges one by publishing to `.../alert/ack`, sees the
change come back, and reads nothing of another store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from companion_helpers import cue, running_companion, sqlite_url, wait_until
from test_fleet_broker_access import Client

from calmcue.broker import Mosquitto
from calmcue.shared import broker_access
from companion import alerts
from firmware.tools.fleet_client import DbFleet

SITE, OTHER = "store-1", "store-2"
DEVICE, OTHER_DEVICE = "cc-0000000000c2", "cc-0000000000d1"


def messages(client: Client, kind: str) -> list[dict]:
    return [json.loads(p) for t, p in client.received if t.endswith(f"/alert/{kind}")]


def test_a_manager_follows_and_acknowledges_alerts_from_an_mqtt_app(tmp_path: Path):
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "key.pem")
    creds = {
        "companion": fleet.mqtt_account(site=None, device=None, username="companion"),
        DEVICE: fleet.mqtt_account(site=SITE, device=DEVICE),
        OTHER_DEVICE: fleet.mqtt_account(site=OTHER, device=OTHER_DEVICE),
        # what POST /fleet/mqtt/accounts {"site": "store-1", "username": "ann-phone"} makes
        "ann-phone": fleet.mqtt_account(site=SITE, device=None, username="ann-phone"),
    }
    passwd, acl = broker_access.write_files(fleet.store.accounts(), tmp_path / "broker")
    broker = Mosquitto(
        workdir=tmp_path,
        extra_conf=f"user root\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n",
    ).start()
    url = f"mqtt://companion:{creds['companion']['password']}@127.0.0.1:{broker.port}"
    try:
        with running_companion(sqlite_url(tmp_path), url) as comp:
            phone = Client(broker.port, "ann-phone", creds["ann-phone"]["password"])
            assert phone.connected.wait(5)
            phone.subscribe(f"calmcue/v1/{SITE}/alert/#")
            phone.subscribe(f"calmcue/v1/{OTHER}/alert/#")  # granted or not, nothing may arrive
            counters = {
                d: Client(broker.port, d, creds[d]["password"]) for d in (DEVICE, OTHER_DEVICE)
            }
            for site, d in ((OTHER, OTHER_DEVICE), (SITE, DEVICE)):
                assert counters[d].connected.wait(5)
                ev = cue(site=site, device=d, seq=1, cue_name="call_manager", level=3)
                counters[d].publish(f"calmcue/v1/{site}/{d}/evt/cue", json.dumps(ev).encode())
            opened = wait_until(lambda: messages(phone, "call_manager"), what="the alert")[0]
            assert (opened["site"], opened["device"], opened["state"]) == (SITE, DEVICE, "open")
            # acknowledge from the app, as the docs show it
            phone.publish(f"calmcue/v1/{SITE}/alert/ack",
                          json.dumps({"id": opened["id"], "by": "ann"}).encode())  # fmt: skip
            wait_until(lambda: len(messages(phone, "call_manager")) == 2, what="the change")
            changed = messages(phone, "call_manager")[1]
            assert (changed["state"], changed["acked_by"]) == ("acknowledged", "mqtt:ann")
            stored = alerts.get_alert(comp.engine, opened["id"])
            assert stored and stored["state"] == "acknowledged"
            time.sleep(0.3)
            assert all(f"/{OTHER}/" not in t for t, _ in phone.received)  # the other store's
            assert len(alerts.list_alerts(comp.engine, sites=frozenset({OTHER}))) == 1
            for c in (phone, *counters.values()):
                c.close()
    finally:
        broker.close()
