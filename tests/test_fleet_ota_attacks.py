"""OTA under attack (issue 17, finding 4), on the unix-port board against the fleet routers over
real HTTP(S): someone on the store network sits between the headset and the companion (a proxy
the device's ota_url points at, as ARP or DNS spoofing would arrange) and replays an old offer,
offers an older bundle, or replays the device's own reports; a server whose certificate another
CA signed is refused. Before this, the offer was unsigned and carried no nonce, and reports
needed nothing at all."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fleet_helpers import FleetServer, make_bundle
from test_agent_tls import _cert, _pem
from test_fleet_ota import (
    DEVICE,
    HEALTHY_MAIN,
    SITE,
    UID,
    boot_and_run_main,
    device_update,
    pointer,
    publish,
    report,
    rig,  # noqa: F401 - the fixture
)

from companion import fleet as fleet_mod
from firmware.tools import devicelink, provision
from firmware.tools.fleet_client import DbFleet
from firmware.tools.simdevice import SimulatedBoard


class Mitm:
    """An HTTP proxy in front of the companion that records what passes and may answer update
    checks itself (`forge(query) -> body or None`)."""

    def __init__(self, upstream: str):
        up = urlsplit(upstream)
        self.seen: list[dict[str, Any]] = []
        self.forge = lambda query: None
        mitm = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path
                query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
                forged = mitm.forge(query) if path.startswith("/fleet/ota/check") else None
                if forged is not None:
                    status, data = 200, forged
                else:
                    conn = http.client.HTTPConnection(up.hostname, up.port, timeout=10)
                    conn.request(self.command, path, body=body or None,
                                 headers={k: v for k, v in self.headers.items()
                                          if k.lower().startswith(("x-", "content-type"))})
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    conn.close()
                mitm.seen.append({"method": self.command, "path": path, "query": query,
                                  "headers": dict(self.headers), "body": body,
                                  "status": status, "answer": data, "forged": forged is not None})
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self, prefix: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["path"].startswith(prefix)]


@pytest.fixture
def mitm(rig):  # noqa: F811
    fleet, server, board, tmp = rig
    m = Mitm(server.url)
    doc = json.loads((board.flash / "device.json").read_text())
    (board.flash / "device.json").write_text(json.dumps({**doc, "ota_url": m.url}))
    yield m
    m.close()


def manifests_fetched(m: Mitm) -> int:
    return len([s for s in m.seen if s["path"].endswith("/manifest")])


def test_replayed_offer_of_a_withdrawn_update_is_refused(rig, mitm):  # noqa: F811
    """IT pauses 2.1.0 after a device was offered it; an attacker who recorded that offer plays
    it back later to push the withdrawn bundle (its manifest is genuinely signed and newer, so
    without a fresh offer the device would take it)."""
    fleet, server, board, tmp = rig
    bad = publish(fleet, tmp, "2.1.0", HEALTHY_MAIN)
    with devicelink.DeviceLink(board.port) as link:  # the device checks; nothing applied yet
        link.exec("from firmware.headset import ota\nident = json.load(open('device.json'))\n"
                  "print(ota.check(ident))\n")
    (recorded,) = mitm.paths("/fleet/ota/check")
    assert json.loads(json.loads(recorded["answer"])["offer"])["update"] == bad
    fleet.set_rollout(bad, state="paused")
    mitm.forge = lambda query: recorded["answer"]
    out = device_update(board, mitm.url)
    assert out == ("refused: update offer is not the answer to this check (replayed, or for "
                   "another device or site)")
    assert manifests_fetched(mitm) == 0
    p = pointer(board)
    assert (p["active"], p["state"], p["version"]) == ("a", "good", "1.0.0")
    assert not (board.flash / "b").exists()


def test_downgrade_to_an_older_signed_bundle_is_refused(rig, mitm, tmp_path):  # noqa: F811
    fleet, server, board, tmp = rig
    old = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    assert device_update(board, mitm.url) == "applied 2.0.0"
    assert boot_and_run_main(board, 3) == "main ok from b"
    publish(fleet, tmp, "2.1.0", HEALTHY_MAIN)
    assert device_update(board, mitm.url) == "applied 2.1.0"
    assert boot_and_run_main(board, 4) == "main ok from a"
    assert report(board, mitm.url) == "confirmed"
    fetched = manifests_fetched(mitm)

    # 1. the old, unsigned answer naming the 2.0.0 update (what every check looked like before)
    mitm.forge = lambda q: json.dumps({"update": old, "version": "2.0.0"}).encode()
    assert device_update(board, mitm.url) == (
        "refused: the answer to the update check is not a signed offer")
    for junk in (b"[]", b'{"offer": 5, "sig": "zz"}', b"not json"):  # and no crash either
        mitm.forge = lambda q, junk=junk: junk
        assert device_update(board, mitm.url) == (
            "refused: the answer to the update check is not a signed offer")
    # 2. a fresh offer for it, signed by the attacker's own key
    attacker = fleet_mod.load_or_create_key(tmp_path / "attacker.pem")

    def offer(key: Any, query: dict[str, str]) -> bytes:
        raw = json.dumps({"v": 1, "site": SITE, "device": DEVICE, "nonce": query["nonce"],
                          "update": old, "version": "2.0.0"}, separators=(",", ":"))
        return json.dumps({"offer": raw, "sig": fleet_mod.sign(key, raw.encode())}).encode()

    mitm.forge = lambda q: offer(attacker, q)
    assert device_update(board, mitm.url) == (
        "refused: update offer signature is not valid for this device's update key")
    # 3. even a fresh offer signed with the companion's own key (a companion that offers an
    #    older version by mistake, or a stolen key) is refused before anything is downloaded
    mitm.forge = lambda q: offer(fleet.store.key, q)
    assert device_update(board, mitm.url) == (
        f"refused: update {old} is version 2.0.0, not newer than 2.1.0 on this device "
        "(anti-rollback); publish the bundle under a higher version")
    assert manifests_fetched(mitm) == fetched  # no manifest, no file of 2.0.0 fetched
    p = pointer(board)
    assert (p["active"], p["state"], p["version"], p["floor"]) == ("a", "good", "2.1.0", "2.1.0")
    assert boot_and_run_main(board, 5) == "main ok from a"


def test_reports_cannot_be_forged_or_replayed(rig, mitm):  # noqa: F811
    """The device's own reports, captured on the network: replaying "applied" after it confirmed
    cannot put the update back in flight, and an edited copy or one without the key is
    refused; the status the device reported stays."""
    fleet, server, board, tmp = rig
    update = publish(fleet, tmp, "2.0.0", HEALTHY_MAIN)
    assert device_update(board, mitm.url) == "applied 2.0.0"
    assert boot_and_run_main(board, 3) == "main ok from b"
    assert report(board, mitm.url) == "confirmed"
    reports = mitm.paths("/fleet/ota/report")
    assert [(json.loads(r["body"])["state"], r["status"]) for r in reports] == [
        ("applied", 200), ("confirmed", 200)]
    applied = reports[0]
    upstream = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def post(body: bytes, headers: dict[str, str]) -> int:
        upstream.request("POST", "/fleet/ota/report", body=body,
                         headers={"Content-Type": "application/json", **headers})
        resp = upstream.getresponse()
        resp.read()
        return resp.status

    sig = {k: v for k, v in applied["headers"].items() if k.lower().startswith("x-calmcue")}
    assert post(applied["body"], sig) == 409  # replayed: status only moves forward
    assert post(applied["body"].replace(b'"applied"', b'"rolled_back"'), sig) == 401  # edited
    forged = json.dumps({"site": SITE, "device": DEVICE, "update": update,
                         "state": "rolled_back"}).encode()
    assert post(forged, {}) == 401  # no key
    assert post(forged, {"X-Calmcue-Device": DEVICE, "X-Calmcue-Signature": "00" * 32}) == 401
    upstream.close()
    summary = fleet.update_summary(update)
    assert [(d["device"], d["state"]) for d in summary["devices"]] == [(DEVICE, "confirmed")]


# ---- HTTPS with the CA pinned at provisioning -----------------------------------------------


def _pki(tmp_path: Path) -> dict[str, Any]:
    pki = tmp_path / "pki"
    pki.mkdir()
    out: dict[str, Any] = {}
    for name in ("good", "rogue"):  # the same names; only the CA that signed differs
        ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
            ec.SECP256R1())
        ca = _cert("calmcue test CA", ca_key, ca=True)
        srv = _cert("127.0.0.1", srv_key, issuer=ca.subject, issuer_key=ca_key)
        out[name] = {"ca_der": ca.public_bytes(serialization.Encoding.DER),
                     "cert": _pem(pki / f"{name}.pem", srv),
                     "key": _pem(pki / f"{name}.key", srv_key)}
    return out


def test_update_over_https_with_the_provisioned_ca_and_a_rogue_server_refused(tmp_path):
    fleet = DbFleet(f"sqlite:///{tmp_path / 'fleet.db'}", key_path=tmp_path / "ota_key.pem")
    pki = _pki(tmp_path)
    with FleetServer(fleet.store, pki["good"]["cert"], pki["good"]["key"]) as server, \
            FleetServer(fleet.store, pki["rogue"]["cert"], pki["rogue"]["key"]) as rogue, \
            SimulatedBoard(tmp_path / "flash", unique_id=UID, heapsize="96K") as board:
        ident = provision.Identity(
            site=SITE, name="counter-2", label="CC-000123", profile="esp32s3-headset",
            mqtt_url="mqtt://127.0.0.1:1883", wifi_ssid="staff", ota_url=server.url)
        problems = provision.validate(ident, target="esp32", loopback_ok=True)
        assert any("--ota-ca" in p for p in problems)  # https:// without a CA: refused up front
        ident = provision.Identity(**{**ident.__dict__, "ota_ca": pki["good"]["ca_der"]})
        bundle = provision.load_bundle(make_bundle(tmp_path / "v1", "1.0.0"))
        provision.provision_esp32(board.port, ident, bundle, fleet, loopback_ok=True,
                                  log=lambda m: None)
        board.wait_boots(2)
        doc = json.loads((board.flash / "device.json").read_text())
        assert doc["ota_url"].startswith("https://") and doc["ota_ca"] == "ota_ca.der"
        assert (board.flash / "ota_ca.der").read_bytes() == pki["good"]["ca_der"]

        update = publish(fleet, tmp_path, "2.0.0", HEALTHY_MAIN)
        # someone else's server on the device's path: its certificate is not from the CA
        (board.flash / "device.json").write_text(json.dumps({**doc, "ota_url": rogue.url}))
        out = device_update(board, rogue.url)
        assert out == ("refused: TLS with 127.0.0.1 refused: The certificate is not correctly "
                       "signed by the trusted CA"), out
        assert pointer(board)["state"] == "good" and not (board.flash / "b").exists()
        assert fleet.update_summary(update)["counts"] == {
            "applied": 0, "confirmed": 0, "rolled_back": 0, "refused": 0}

        (board.flash / "device.json").write_text(json.dumps(doc))
        assert device_update(board, server.url) == "applied 2.0.0"
        assert boot_and_run_main(board, 3) == "main ok from b"
        assert report(board, server.url) == "confirmed"  # the report went over https too
        assert fleet.update_summary(update)["counts"]["confirmed"] == 1


def test_companion_serves_https_with_its_certificate(tmp_path):
    """`calmcue companion serve` with CALMCUE_TLS_CERTFILE/KEYFILE: the update endpoints over
    HTTPS, checked against the CA; a client trusting another CA is refused; one file alone is a
    configuration error."""
    import ssl

    import httpx

    from companion import server
    from companion.config import Settings, SettingsError

    pki = _pki(tmp_path)
    base = dict(db_url=f"sqlite:///{tmp_path / 'c.db'}", mqtt_url=None, port=0,
                fleet_key_path=str(tmp_path / "key.pem"))
    with pytest.raises(SettingsError, match="both CALMCUE_TLS_CERTFILE and CALMCUE_TLS_KEYFILE"):
        server.start(Settings(**base, tls_certfile=pki["good"]["cert"]))
    running = server.start(Settings(**base, tls_certfile=pki["good"]["cert"],
                                    tls_keyfile=pki["good"]["key"]))
    try:
        assert running.url.startswith("https://")
        for name, ok in (("good", True), ("rogue", False)):
            ctx = ssl.create_default_context(cadata=pki[name]["ca_der"])
            with httpx.Client(verify=ctx) as http:
                if ok:
                    r = http.get(running.url + "/fleet/ota/check",
                                 params={"site": SITE, "device": DEVICE, "nonce": "00" * 8})
                    assert json.loads(r.json()["offer"])["update"] is None
                else:
                    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                        http.get(running.url + "/fleet/ota/check")
    finally:
        running.stop()
