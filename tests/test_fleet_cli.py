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
    bundle = make_bundle(tmp / "bundle", "1.0.0")
    with SimulatedBoard(tmp / "flash", unique_id=UID) as board:
        code, out, err = run(
            capsys, "device", "provision", "--port", board.port, "--site", "store-042",
            "--name", "counter-2", "--label", "CC-000777", "--wifi", "staff",
            "--wifi-password", "a-long-password", "--mqtt", "mqtt://127.0.0.1:1883",
            "--ota-url", "http://127.0.0.1:8000", "--allow-loopback", "--bundle", str(bundle),
            "--broker-dir", str(tmp / "broker"), *db)
        assert code == 0, err
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
    code, out, err = run(capsys, "device", "provision", "--target", "pi", "--root", str(root),
                         "--site", "store-042", "--name", "counter-1", "--label", "PI-0042",
                         "--mqtt", "mqtts://broker.store-042.lan:8883", "--no-reboot", *db)
    assert code == 0, err
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
    args = ["device", "provision", "--target", "pi", "--site", "store-042", "--name",
            "counter-1", "--label", "PI-7", "--mqtt", "mqtts://broker.store-042.lan:8883", *db]
    code, _, err = run(capsys, *args, "--ssh", "pi@counter-1.lan")
    assert code == 0, err
    cfg = json.loads((root / "etc" / "calmcue" / "agent.json").read_text())
    assert cfg["device"] == "cc-0000feedbeef" and cfg["mqtt"]["username"] == "cc-0000feedbeef"
    assert oct((root / "etc" / "calmcue" / "agent.json").stat().st_mode & 0o777) == "0o600"
    log = (tmp / "ssh.log").read_text().splitlines()
    assert all(line.startswith("pi@counter-1.lan\tsudo -n sh -c ") for line in log)
    assert "systemctl restart calmcue-agent" in log[-1]

    code, _, err = run(capsys, *args, "--ssh", "unreachable@nowhere")
    assert code == 2 and "cannot reach unreachable@nowhere over ssh: ssh: connect" in err
