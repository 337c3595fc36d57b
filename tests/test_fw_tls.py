"""The headset over mqtts:// on the real MicroPython unix port (1.29: `ssl` with SSLContext, no
`ussl`, as every MicroPython since 1.23): the broker's certificate is checked against the CA
provisioned on flash, and a broker whose certificate another CA signed is refused. Before this,
umqtt.simple's `import ussl` raised ImportError on every port since 1.23 and the device rebooted
in a loop; on 1.22 the link was encrypted but the certificate never checked."""

from __future__ import annotations

import json
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fw_harness import REPO, Collector, Device
from test_agent_tls import _cert, _pem
from test_fw_headset import HEAP, SITE_DEV

from calmcue.broker import free_port
from calmcue.mpy import interpreter
from firmware.tools import smoke_headset

# The headset's heap budget (tests/test_fw_headset.py). mbedTLS keeps its session outside the
# MicroPython heap (unix port: malloc; ESP32: the ESP-IDF heap), so TLS fits the same budget.
TLS_HEAP = HEAP


def _pki(tmp_path, mosquitto):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("calmcue test CA", ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, issuer=ca.subject, issuer_key=ca_key)
    # A second broker with a certificate from a CA the device was not given.
    rogue_key, rogue_srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    rogue = _cert("calmcue test CA", rogue_key, ca=True)
    rogue_srv = _cert("127.0.0.1", rogue_srv_key, issuer=rogue.subject, issuer_key=rogue_key)
    good_port, rogue_port = free_port(), free_port()
    mosquitto.extra_conf = (
        f"user root\nlistener {good_port} 127.0.0.1\ncafile {_pem(pki / 'ca.pem', ca)}\n"
        f"certfile {_pem(pki / 'srv.pem', srv)}\nkeyfile {_pem(pki / 'srv.key', srv_key)}\n"
        f"listener {rogue_port} 127.0.0.1\ncafile {_pem(pki / 'rogue.pem', rogue)}\n"
        f"certfile {_pem(pki / 'rsrv.pem', rogue_srv)}\n"
        f"keyfile {_pem(pki / 'rsrv.key', rogue_srv_key)}\n"
    )
    mosquitto.restart()
    return ca.public_bytes(serialization.Encoding.DER), good_port, rogue_port


def _smoke(build, wav, flash):
    code = (
        f"import sys\nsys.path[:0] = [{str(build / 'host')!r}, {str(build)!r}]\n"
        f"import machine\nmachine.wav = [{str(wav)!r}, True, False]\n"
        + smoke_headset.device_code(seconds=1, root=str(flash) + "/")
    )
    proc = subprocess.run([*interpreter(), "-X", "heapsize=160K", "-c", code],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    return smoke_headset.parse(proc.stdout + proc.stderr)


def _provision(flash, ca_der, port):
    """device.json and ca.der as `calmcue device provision --mqtt-ca` writes them."""
    flash.mkdir()
    (flash / "ca.der").write_bytes(ca_der)
    (flash / "device.json").write_text(json.dumps({
        "site": "demo", "device": "headset-1", "wifi": {"ssid": "store", "password": "x" * 8},
        "mqtt": {"host": "127.0.0.1", "port": port, "ssl": True, "ca": "ca.der"},
    }))  # fmt: skip


def test_mqtts_checks_the_broker_certificate(host_build, headset_wav, tmp_path, mosquitto):
    ca_der, good_port, rogue_port = _pki(tmp_path, mosquitto)
    collector = Collector(mosquitto.port)
    try:
        _provision(tmp_path / "good", ca_der, good_port)
        dev = Device(host_build, tmp_path / "good", headset_wav, good_port, heap=TLS_HEAP)
        dev.cmd("press 200")  # an ack event to deliver
        got = collector.wait_for(lambda m: m[0] == SITE_DEV + "evt/button", pump=dev.pump)
        assert json.loads(got[1])["action"] == "ack"
        assert collector.wait_for(lambda m: m[0] == SITE_DEV + "status")[1] == b"online"
        dev.close()
        # The hardware smoke test's TLS figure (firmware/tools/smoke_headset.py), here on the
        # unix port against the same listener.
        smoke = _smoke(host_build, headset_wav, tmp_path / "good")
        assert smoke["tls_handshake_ms"] is not None and "tls_error" not in smoke, smoke
        print("smoke test on the unix port:", smoke_headset.summary(smoke))

        _provision(tmp_path / "rogue", ca_der, rogue_port)
        dev = Device(host_build, tmp_path / "rogue", headset_wav, rogue_port, heap=TLS_HEAP)
        state = dev.cmd("audio 20")  # ~20 connect attempts' worth of backoff: none gets in
        logs = [x["log"] for x in dev.lines if "log" in x]
        dev.close()
        assert not state["mqtt"] and state["connects"] == 0 and state["t_ms"] >= 20000
        assert logs and all(x.startswith("connect failed") for x in logs), logs
        print("rogue broker:", logs[0])
    finally:
        collector.close()


def test_tls_refused_without_sslcontext_and_no_ussl_anywhere():
    """MicroPython before 1.22 has `ssl.wrap_socket` (and `ussl`) but no SSLContext, so no way
    to check a certificate: the firmware refuses TLS with a message rather than connecting
    unchecked. Modelled on the real port by replacing the `ssl` module with that module set."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "class old_ssl:\n"
        "    CERT_NONE = 0\n"
        "    @staticmethod\n"
        "    def wrap_socket(sock, **kw): raise AssertionError('unchecked TLS')\n"
        "sys.modules['ssl'] = sys.modules['ussl'] = old_ssl\n"
        "from firmware.headset import tls\n"
        "try:\n"
        "    tls.wrap(None, {'host': 'h', 'ssl': True, 'ca': 'ca.der'}, '')\n"
        "except OSError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([*interpreter(), "-c", code], capture_output=True, text=True, timeout=30)
    assert "refused: this MicroPython has no ssl.SSLContext" in out.stdout, out.stdout + out.stderr
    # Nothing the headset runs imports the module MicroPython 1.23 removed.
    for src in (REPO / "firmware").glob("*.py"):
        assert "import ussl" not in src.read_text(), src
