"""The agent over TLS with a username and password, against a real Mosquitto listener."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import subprocess

import paho.mqtt.client as mqtt
from agent_support import RunningAgent, agent_config, silence, wait_until, write_wav
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gpiozero.pins.mock import MockFactory, MockPWMPin
from paho.mqtt.enums import CallbackAPIVersion

from calmcue.broker import free_port
from firmware.pi.agent import Agent


def _cert(subject: str, key, issuer=None, issuer_key=None, ca: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key or key, hashes.SHA256())


def _pem(path, obj) -> str:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(path)


def test_tls_with_password_delivers_and_a_wrong_password_is_reported(mosquitto, tmp_path, caplog):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("calmcue test CA", ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, issuer=ca.subject, issuer_key=ca_key)
    ca_file = _pem(pki / "ca.pem", ca)
    passwd = pki / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "counter-1", "s3cret"],
                   check=True, capture_output=True)
    tls_port = free_port()
    mosquitto.extra_conf = (
        f"allow_anonymous false\npassword_file {passwd}\nuser root\n"
        f"listener {tls_port} 127.0.0.1\ncafile {ca_file}\n"
        f"certfile {_pem(pki / 'srv.pem', srv)}\nkeyfile {_pem(pki / 'srv.key', srv_key)}\n"
    )
    mosquitto.restart()
    wav = write_wav(tmp_path / "quiet.wav", [silence(1)])
    tls = {"url": f"mqtts://127.0.0.1:{tls_port}", "ca_file": ca_file, "username": "counter-1",
           "password": "s3cret"}

    got: list[bytes] = []
    sub_client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub_client.username_pw_set("counter-1", "s3cret")
    sub_client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    sub_client.connect("127.0.0.1", mosquitto.port)
    sub_client.subscribe("calmcue/v1/store-1/counter-1/evt/#", qos=1)
    sub_client.loop_start()
    try:
        factory = MockFactory(pin_class=MockPWMPin)
        cfg = agent_config(tmp_path, 1, mqtt=tls, outputs={"enabled": True}, audio={"loop": True})
        agent = Agent(cfg, source=f"file:{wav}", realtime=True, pin_factory=factory)
        with RunningAgent(agent):
            assert wait_until(lambda: agent.link.connected, 10), "no TLS connection"
            factory.pin(23).drive_low()
            factory.pin(23).drive_high()
            assert wait_until(lambda: len(got) == 1, 5)
        assert b'"action": "ack"' in got[0]

        bad = dict(tls, password="wrong")
        cfg = agent_config(tmp_path / "bad", 1, mqtt=bad, audio={"loop": True})
        agent = Agent(cfg, source=f"file:{wav}", realtime=True)
        with caplog.at_level(logging.ERROR, logger="calmcue.agent.mqtt"), RunningAgent(agent):
            agent.emit("button", {"action": "ack"})
            assert wait_until(lambda: "refused the connection" in caplog.text, 10)
            assert not agent.link.connected and agent.queue.depth() == 1  # kept for later
        assert "check mqtt.username/password" in caplog.text
    finally:
        sub_client.loop_stop()
        sub_client.disconnect()
