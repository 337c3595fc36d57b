"""The `calmcue device ...` commands end to end: a simulated board on a pty, the fleet records in
SQLite (--db), and the same records over the companion's HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fleet_helpers import make_bundle

from calmcue.cli import main
from firmware.tools.simdevice import SimulatedBoard

UID = "30aea4123456"
DEVICE = "cc-" + UID


@pytest.fixture
def env(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("CALMCUE_COMPANION_URL", raising=False)
    monkeypatch.delenv("CALMCUE_DB_URL", raising=False)
    db = ["--db", f"sqlite:///{tmp_path / 'fleet.db'}", "--key", str(tmp_path / "key.pem")]
    return tmp_path, db


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_provision_list_status_register_update(env, capsys):
    tmp, db = env
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from test_agent_tls import _cert, _pem

    ca = _cert("calmcue test CA", ec.generate_private_key(ec.SECP256R1()), ca=True)
    ca_pem = _pem(tmp / "ca.pem", ca)
    bundle = make_bundle(tmp / "bundle", "1.0.0")
    with SimulatedBoard(tmp / "flash", unique_id=UID) as board:
        code, out, err = run(
            capsys, "device", "provision", "--port", board.port, "--site", "store-042",
            "--name", "counter-2", "--label", "CC-000777", "--wifi", "staff",
            "--wifi-password", "a-long-password", "--mqtt", "mqtt://127.0.0.1:1883",
            "--ota-url", "https://127.0.0.1:8443", "--allow-loopback", "--bundle", str(bundle),
            "--broker-dir", str(tmp / "broker"), *db)
        assert code == 2 and "pass --ota-ca FILE" in err  # https:// needs the server's CA
        code, out, err = run(
            capsys, "device", "provision", "--port", board.port, "--site", "store-042",
            "--name", "counter-2", "--label", "CC-000777", "--wifi", "staff",
            "--wifi-password", "a-long-password", "--mqtt", "mqtt://127.0.0.1:1883",
            "--ota-url", "https://127.0.0.1:8443", "--ota-ca", ca_pem, "--allow-loopback",
            "--bundle", str(bundle), "--broker-dir", str(tmp / "broker"), *db)
        assert code == 0, err
        doc = json.loads((board.flash / "device.json").read_text())
        assert doc["ota_ca"] == "ota_ca.der" and len(doc["ota_report_key"]) == 64
        assert (board.flash / "ota_ca.der").read_bytes() == ca.public_bytes(
            serialization.Encoding.DER)
        assert f"provisioned {DEVICE}: bundle 1.0.0" in out
        assert "systemctl reload mosquitto" in out
        assert f"user {DEVICE}\ntopic write calmcue/v1/store-042/{DEVICE}/#" in (
            tmp / "broker" / "acl").read_text()
        assert (tmp / "broker" / "passwd").read_text().startswith(f"{DEVICE}:$7$")

        code, out, _ = run(capsys, "device", "provision", "--port", board.port, "--check",
                           "--bundle", str(bundle))
        assert code == 0 and "device matches the bundle" in out

        board.wait_boots(2)
        code, out, _ = run(capsys, "device", "status", "--port", board.port)
        on_board = json.loads(out)
        assert on_board["device"]["device"] == DEVICE
        assert "password" not in on_board["device"]["mqtt"]  # never printed
        assert "ota_report_key" not in on_board["device"]
        assert on_board["ota"]["active"] == "a"

    code, out, _ = run(capsys, "device", "list", *db)
    assert code == 0
    assert "CC-000777" in out and DEVICE in out and "counter-2" in out

    code, out, _ = run(capsys, "device", "status", DEVICE, *db)
    assert json.loads(out)["label"] == "CC-000777"

    code, out, _ = run(capsys, "device", "register", "--companion-account", "--out",
                       str(tmp / "broker"), *db)
    assert code == 0 and json.loads(out.splitlines()[0])["username"] == "companion"
    assert "user companion\ntopic readwrite calmcue/v1/#" in (tmp / "broker" / "acl").read_text()

    v2 = make_bundle(tmp / "v2", "2.0.0")
    code, out, _ = run(capsys, "device", "update", "--bundle", str(v2), "--site", "store-042",
                       "--percent", "10", *db)
    published = json.loads(out)
    assert code == 0 and published["version"] == "2.0.0" and published["percent"] == 10
    code, out, err = run(capsys, "device", "update", "--bundle", str(v2), "--site", "store-042",
                         *db)  # the same version again: the devices would refuse it
    assert code != 0 and "publish this bundle under a higher version" in err
    code, out, _ = run(capsys, "device", "update", "--update", published["update"],
                       "--percent", "50", *db)
    assert json.loads(out)["percent"] == 50
    code, out, _ = run(capsys, "device", "update", "--update", published["update"], "--pause", *db)
    assert json.loads(out)["state"] == "paused"


def test_unknown_device_and_missing_records_location(env, capsys):
    tmp, db = env
    code, _, err = run(capsys, "device", "status", "cc-000000000000", *db)
    assert code == 1 and "not in the inventory" in err
    code, _, err = run(capsys, "device", "list")
    assert code == 1 and "--companion http://HOST:8000" in err


def test_pi_provisioned_locally(env, capsys):
    tmp, db = env
    root = tmp / "pi"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text("Hardware\t: BCM2835\nSerial\t\t: 10000000abcdef12\n")
    args = ["device", "provision", "--target", "pi", "--root", str(root), "--site", "store-042",
            "--name", "counter-1", "--label", "PI-0042", "--mqtt",
            "mqtts://broker.store-042.lan:8883", "--no-reboot", *db]
    # Not installed yet (no calmcue group in the Pi's /etc/group): refused, nothing recorded.
    code, out, err = run(capsys, *args)
    assert code == 2 and "install the agent first" in err and not (root / "etc" / "calmcue").exists()
    (root / "etc").mkdir()
    (root / "etc" / "group").write_text("root:x:0:\ncalmcue:x:997:\n")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    st = (root / "etc" / "calmcue" / "agent.json").stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o777)) == (0, 997, "0o640")
    cfg = json.loads((root / "etc" / "calmcue" / "agent.json").read_text())
    assert cfg["device"] == "cc-0000abcdef12" and cfg["site"] == "store-042"
    assert cfg["mqtt"]["username"] == "cc-0000abcdef12" and len(cfg["mqtt"]["password"]) > 20
    code, out, _ = run(capsys, "device", "list", "--json", *db)
    assert json.loads(out)[0]["label"] == "PI-0042"


def test_pi_bad_config_refused_before_anything_is_written(env, capsys):
    tmp, db = env
    root = tmp / "pi"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text("Serial\t\t: 10000000abcdef12\n")
    code, _, err = run(capsys, "device", "provision", "--target", "pi", "--root", str(root),
                       "--site", "store-042", "--name", "counter-1",
                       "--mqtt", "mqtt://broker.store-042.lan:1883", "--no-reboot", *db)
    assert code == 2
    assert "password would cross the network in clear text; use mqtts://" in err
    assert not (root / "etc").exists()
    code, out, _ = run(capsys, "device", "list", "--json", *db)
    assert json.loads(out) == []


FAKE_SSH = """#!{python}
# A recording stand-in for the network hop: logs the command and runs it against a folder that
# plays the Pi's root filesystem.
import os, subprocess, sys
root = os.environ["FAKE_PI_ROOT"]
host, cmd = sys.argv[1], " ".join(sys.argv[2:])
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(host + "\\t" + cmd + "\\n")
if host.startswith("unreachable"):
    sys.stderr.write("ssh: connect to host unreachable port 22: No route to host\\n")
    sys.exit(255)
if "systemctl" in cmd:
    sys.exit(0)
cmd = cmd.replace("sudo -n sh -c ", "sh -c ").replace("/etc/", root + "/etc/").replace("/proc/", root + "/proc/")
sys.exit(subprocess.call(["sh", "-c", cmd]))
"""


def test_pi_provisioned_over_ssh(env, capsys, monkeypatch):
    import sys

    tmp, db = env
    root = tmp / "pi"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text("Serial\t\t: 10000000feedbeef\n")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH.format(python=sys.executable))
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("FAKE_PI_ROOT", str(root))
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp / "ssh.log"))
    # The fake hop runs the commands here, where the Pi's calmcue group does not exist: the
    # service group is this machine's nogroup instead.
    args = ["device", "provision", "--target", "pi", "--site", "store-042", "--name",
            "counter-1", "--label", "PI-7", "--mqtt", "mqtts://broker.store-042.lan:8883", *db,
            "--service-group", "nogroup"]
    code, _, err = run(capsys, *args, "--ssh", "pi@counter-1.lan")
    assert code == 0, err
    cfg = json.loads((root / "etc" / "calmcue" / "agent.json").read_text())
    assert cfg["device"] == "cc-0000feedbeef" and cfg["mqtt"]["username"] == "cc-0000feedbeef"
    st = (root / "etc" / "calmcue" / "agent.json").stat()
    assert (st.st_gid, oct(st.st_mode & 0o777)) == (65534, "0o640")  # the service group reads it
    log = (tmp / "ssh.log").read_text().splitlines()
    assert all(line.startswith("pi@counter-1.lan\tsudo -n sh -c ") for line in log)
    assert "systemctl restart calmcue-agent" in log[-1]

    code, _, err = run(capsys, *args, "--ssh", "unreachable@nowhere")
    assert code == 2 and "cannot reach unreachable@nowhere over ssh: ssh: connect" in err


def test_pi_config_is_readable_by_the_unprivileged_service_user(env, capsys):
    """The agent runs as `calmcue` (firmware/pi/calmcue-agent.service), not root. Modelled with
    this machine's unprivileged nobody:nogroup standing for calmcue:calmcue: the provisioned
    config must be readable and parse as that user, as the agent's start reads it (root-owned
    0600 gave PermissionError, and systemd gave up after 10 restarts); others cannot read it.
    (The system Python: this venv's interpreter lives under /root, closed to nobody.)"""
    import os
    import subprocess
    import tempfile

    tmp, db = env
    root = Path(tempfile.mkdtemp(prefix="calmcue-pi-root-"))  # traversable, unlike tmp_path
    try:
        root.chmod(0o755)
        (root / "proc").mkdir()
        (root / "proc" / "cpuinfo").write_text("Serial\t\t: 10000000abcdef12\n")
        (root / "etc").mkdir()
        (root / "etc" / "group").write_text("calmcue:x:65534:\n")  # calmcue's gid = nogroup's
        code, _, err = run(capsys, "device", "provision", "--target", "pi", "--root", str(root),
                           "--site", "store-042", "--name", "counter-1", "--mqtt",
                           "mqtts://broker.store-042.lan:8883", "--no-reboot", *db)
        assert code == 0, err
        check = ["/usr/bin/python3", "-c", "import json, sys; "
                 "print('ok (site', json.load(open(sys.argv[1]))['site'])",
                 str(root / "etc" / "calmcue" / "agent.json")]
        env_ = dict(os.environ, HOME="/nonexistent")
        as_service = subprocess.run(check, user=65534, group=65534, extra_groups=[], env=env_,
                                    capture_output=True, text=True, timeout=60, cwd="/")
        assert as_service.returncode == 0, as_service.stdout + as_service.stderr
        assert "ok (site store-042" in as_service.stdout
        # Anyone else (not in the group) is kept out: the file holds the MQTT password.
        other = subprocess.run(check, user=65534, group=1, extra_groups=[], env=env_,
                               capture_output=True, text=True, timeout=60, cwd="/")
        assert other.returncode != 0 and "ermission denied" in other.stdout + other.stderr
    finally:
        import shutil

        shutil.rmtree(root)
