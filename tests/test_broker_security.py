"""The broker side under attack (issue 17 findings 4, 5 and 7), against real Mosquitto brokers:

- rule generation: a newline in a username, an account without a site, a device named `alert`;
- the embedded broker of `calmcue run` refuses anonymous clients, and a device cannot
  acknowledge, resolve or fake alerts;
- the companion over mqtts://: connects with the right CA (and with a client certificate where
  the broker asks for one), refuses a wrong CA and a certificate for another host name.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, sqlite_url, wait_until
from cryptography.hazmat.primitives.asymmetric import ec
from test_agent_tls import _cert, _pem
from test_fleet_broker_access import Client

from calmcue.broker import Mosquitto, authenticated, free_port
from companion.config import Settings
from companion.fleet import FleetError, FleetStore, mqtt_accounts
from companion.server import start

SITE = "store-7"


# ---- rule generation ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    from companion.db import make_engine, migrate

    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield FleetStore(engine, key_path=tmp_path / "key.pem")
    engine.dispose()


@pytest.mark.parametrize(
    ("site", "device", "username", "why"),
    [
        (SITE, "counter-1", "evil\ntopic readwrite #", "not allowed"),  # rule injection
        (SITE, "counter-1", "two words", "not allowed"),
        (SITE, "counter-1", "a+b", "not allowed"),
        (SITE, "counter-1", "x" * 65, "not allowed"),
        (SITE, "counter-1", "user:x", "not allowed"),  # the password file's separator
        (None, None, "pager", "has no site"),  # would have read and written everything
        (None, "counter-1", None, "needs its site"),
        (SITE, "alert", None, "reserved topic word"),  # could acknowledge the site's alerts
        (SITE, "alerts", None, "reserved topic word"),
        (SITE, "+", None, "not allowed"),
        (SITE, "#", None, "not allowed"),
        ("$SYS", "counter-1", None, "not allowed"),
        ("store/7", "counter-1", None, "not allowed"),
        (SITE, "companion", None, "reserved topic word"),  # would rotate the companion's account
    ],
)
def test_rule_generation_refuses_abuse(store, site, device, username, why):
    with pytest.raises(FleetError, match=why):
        store.mqtt_account(site=site, device=device, username=username)
    assert store.accounts() == []


def test_rows_that_slipped_into_the_registry_get_no_access(store):
    # an older version could have stored these; the generated files must give them nothing
    with store.engine.begin() as conn:
        for username, site, device in (("pager", None, None), ("evil\ntopic readwrite #", SITE,
                                       "counter-1"), ("alert", SITE, "alert")):
            conn.execute(mqtt_accounts.insert().values(
                username=username, site=site, device=device, password_hash="$7$x",
                created_at=0.0))
    store.mqtt_account(site=None, device=None, username="companion")
    store.mqtt_account(site=SITE, device="counter-1")
    store.mqtt_account(site=SITE, device=None, username="mgr-pager-1")
    files = store.broker_files()
    acl = files["acl"]
    assert "topic readwrite #" not in acl and "evil" not in acl and "evil" not in files["passwd"]
    # only the companion reads and writes everything
    assert acl.count("topic readwrite calmcue/v1/#") == 1
    assert "user companion\ntopic readwrite calmcue/v1/#" in acl
    pager = acl.split("user pager\n", 1)[1].split("\n\n", 1)[0]
    assert pager.startswith("# no access") and "topic" not in pager.replace("# no access", "")
    assert "user alert\n# no access" in acl
    # a site account (a manager's device) reads its site's alerts and may acknowledge them
    assert ("user mgr-pager-1\ntopic write calmcue/v1/store-7/alert/ack\n"
            "topic write calmcue/v1/store-7/alert/resolve\n"
            "topic read calmcue/v1/store-7/alert/#\n") in acl


def test_api_refuses_abusive_accounts_and_device_ids(tmp_path):
    from companion import users

    with running_companion(sqlite_url(tmp_path), None, env="development",
                           admin_password="admin-pass-1") as c:
        auth = {"Authorization": f"Bearer {users.create_token(c.engine, 'admin')}"}
        for body in ({"site": SITE, "device": "alert"},
                     {"username": "x\ntopic readwrite #", "site": SITE, "device": "counter-1"},
                     {"username": "siteless"}):
            r = httpx.post(c.url + "/fleet/mqtt/accounts", json=body, headers=auth)
            assert r.status_code == 422, (body, r.text)
        r = httpx.post(c.url + "/api/devices", json={"site": SITE, "device": "alert"},
                       headers=auth)
        assert r.status_code == 422 and "reserved" in r.text
        assert httpx.get(c.url + "/fleet/mqtt/files", headers=auth).json()["passwd"] == ""


# ---- the embedded broker: nobody anonymous, devices only under their own topics -------------


def test_embedded_broker_refuses_anonymous_and_devices_cannot_touch_alerts(tmp_path):
    broker, creds = authenticated([(SITE, "counter-1")], workdir=tmp_path / "mqtt")
    broker.start()
    clients: list[Client] = []
    try:
        with running_companion(sqlite_url(tmp_path), creds.url("companion")) as c:
            device = Client(broker.port, "counter-1", creds.passwords["counter-1"])
            clients.append(device)
            assert device.connected.wait(5) and device.connect_rc.value == 0
            ev = cue(site=SITE, device="counter-1", seq=1, cue_name="call_manager", level=3)
            assert device.publish(f"calmcue/v1/{SITE}/counter-1/evt/cue",
                                  json.dumps(ev).encode()).value == 0
            alert = wait_until(lambda: httpx.get(c.url + "/api/alerts").json(), 10,
                               "the alert from the device's call_manager")[0]
            assert alert["state"] == "open"

            anon = Client(broker.port, None, None)
            clients.append(anon)
            assert anon.connected.wait(5) and anon.connect_rc.value != 0  # not authorized
            assert not anon.c.is_connected()

            ack = json.dumps({"id": alert["id"], "by": "mallory"}).encode()
            for topic in (f"calmcue/v1/{SITE}/alert/ack", f"calmcue/v1/{SITE}/alert/resolve",
                          f"calmcue/v1/{SITE}/alert/call_manager"):
                assert device.publish(topic, ack).getName() == "Not authorized", topic
            fake = cue(site=SITE, device="counter-2", seq=1, cue_name="call_manager", level=3)
            assert device.publish(f"calmcue/v1/{SITE}/counter-2/evt/cue",
                                  json.dumps(fake).encode()).getName() \
                == "Not authorized"
            time.sleep(0.5)  # anything wrongly let through would have arrived by now
            alerts = httpx.get(c.url + "/api/alerts").json()
            assert [(a["id"], a["state"], a["device"]) for a in alerts] == [
                (alert["id"], "open", "counter-1")]
    finally:
        for cl in clients:
            cl.close()
        broker.close()


# ---- the companion over mqtts:// -------------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path):
    """Mosquitto with a plain listener (the test's publisher), a TLS listener with a
    certificate for 127.0.0.1 from our CA, and one that also demands a client certificate."""
    pki = tmp_path / "pki"
    pki.mkdir()
    key = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    ca_key, srv_key, cli_key, rogue_key = key(), key(), key(), key()
    ca = _cert("calmcue test CA", ca_key, ca=True)
    rogue = _cert("calmcue test CA", rogue_key, ca=True)  # same name, another key
    srv = _cert("127.0.0.1", srv_key, issuer=ca.subject, issuer_key=ca_key)
    cli = _cert("calmcue-companion", cli_key, issuer=ca.subject, issuer_key=ca_key)
    files = {
        "ca": _pem(pki / "ca.pem", ca),
        "rogue": _pem(pki / "rogue.pem", rogue),
        "cert": _pem(pki / "cli.pem", cli),
        "key": _pem(pki / "cli.key", cli_key),
    }
    srv_files = f"certfile {_pem(pki / 'srv.pem', srv)}\nkeyfile {_pem(pki / 'srv.key', srv_key)}\n"
    tls_port, mtls_port = free_port(), free_port()
    broker = Mosquitto(workdir=tmp_path / "mqtt", extra_conf=(
        f"allow_anonymous true\nuser root\n"
        f"listener {tls_port} 127.0.0.1\ncafile {files['ca']}\n{srv_files}"
        f"listener {mtls_port} 127.0.0.1\ncafile {files['ca']}\n{srv_files}"
        "require_certificate true\n"
    ))
    broker.workdir.mkdir()
    broker.start()
    yield broker, tls_port, mtls_port, files
    broker.close()


def test_companion_over_mqtts_checks_ca_and_host_name(tmp_path, tls_broker):
    broker, tls_port, mtls_port, f = tls_broker
    pub = Publisher(broker.port)
    try:
        # the right CA: connects, and events arrive over TLS
        with running_companion(sqlite_url(tmp_path), f"mqtts://127.0.0.1:{tls_port}",
                               mqtt_ca_file=f["ca"]) as c:
            assert c.ingest.counters().connected
            pub.event(cue(seq=1))
            wait_until(lambda: c.ingest.counters().stored == 1, 10, "the event over TLS")
        # a client certificate where the listener demands one
        with running_companion(sqlite_url(tmp_path / "m"), f"mqtts://127.0.0.1:{mtls_port}",
                               mqtt_ca_file=f["ca"], mqtt_cert_file=f["cert"],
                               mqtt_key_file=f["key"]) as c:
            assert c.ingest.counters().connected
        # refused: a CA that did not sign the broker's certificate; a host name the certificate
        # does not carry (same broker, same CA); no client certificate where one is required
        for name, url, extra in (
            ("wrong CA", f"mqtts://127.0.0.1:{tls_port}", {"mqtt_ca_file": f["rogue"]}),
            ("wrong host", f"mqtts://localhost:{tls_port}", {"mqtt_ca_file": f["ca"]}),
            ("no client cert", f"mqtts://127.0.0.1:{mtls_port}", {"mqtt_ca_file": f["ca"]}),
        ):
            comp = start(Settings(env="demo", db_url=sqlite_url(tmp_path / name.replace(" ", "-")),
                                  data_dir=tmp_path, mqtt_url=url, port=0, **extra,
                                  mqtt_client_id=f"refused-{time.monotonic_ns()}"))
            try:
                time.sleep(3)  # the good cases above connected well within this
                counters = comp.ingest.counters()
                assert (counters.connects, counters.connected) == (0, False), name
            finally:
                comp.stop()
    finally:
        pub.close()


def test_mqtts_settings_are_checked(tmp_path):
    from pydantic import ValidationError

    from companion.config import MqttTarget

    assert MqttTarget.parse("mqtts://broker.example").port == 8883
    with pytest.raises(ValidationError, match="use mqtts://"):
        Settings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_ca_file=__file__)
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(mqtt_url="mqtts://127.0.0.1", mqtt_ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="needs both"):
        Settings(mqtt_url="mqtts://127.0.0.1", mqtt_cert_file=__file__)


def test_cli_register_refuses_a_reserved_device_id_and_keys_are_absolute(
    tmp_path, capsys, monkeypatch
):
    from calmcue.cli import main
    from firmware.tools import fleet_client

    db = sqlite_url(tmp_path)
    assert main(["device", "register", "--db", db, "--site", SITE, "--device", "alert"]) != 0
    err = capsys.readouterr().err
    assert "reserved topic word" in err and "Traceback" not in err
    monkeypatch.setenv("CALMCUE_DATA_DIR", "rel-data")
    monkeypatch.chdir(tmp_path)
    assert fleet_client.default_key_path() == tmp_path / "rel-data/fleet/ota_signing_key.pem"
