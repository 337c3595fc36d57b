"""Pi agent configuration: TOML/JSON, every problem reported at once with a fix-it message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from firmware.pi import config
from firmware.pi.config import ConfigError

GOOD = """
site = "store-12"
device = "counter-2"
state_dir = "{state}"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[policy]
stress_threshold = 0.7
"""


def problems(raw) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.build(raw)
    return err.value.problems


def test_toml_and_json_give_the_same_settings(tmp_path):
    toml = tmp_path / "agent.toml"
    toml.write_text(GOOD.format(state=tmp_path))
    a = config.load(toml)
    js = tmp_path / "agent.json"
    js.write_text(json.dumps(config.to_dict(a)))
    b = config.load(js)
    assert a == b
    assert a.site == "store-12" and a.mqtt.port == 1883 and not a.mqtt.tls
    assert a.queue_path == tmp_path / "queue.db"
    assert a.policy == {"stress_threshold": 0.7}


def test_every_problem_is_reported_with_what_to_do():
    found = problems(
        {
            "site": "Store 12",
            "mqqt": {},
            "mqtt": {"url": "http://broker:80", "password": "x"},
            "outputs": {"led_pins": [17, 27, 17], "motor_pin": 40, "brightness": 1.5},
            "audio": {"source": "usb"},
            "policy": {"stres_threshold": 0.7},
        }
    )
    text = "\n".join(found)
    assert "device is required" in text
    assert "site must be 1-32 chars" in text and "'Store 12'" in text
    assert "did you mean 'mqtt'" in text
    assert "mqtts://HOST:PORT" in text
    assert "password is set without mqtt.username" in text
    assert "GPIO17 is already used by outputs.led_pins[0]" in text
    assert "GPIO40 is not a usable header pin" in text
    assert "outputs.brightness: 1.5 is out of range" in text
    assert "alsa:DEVICE" in text
    assert "did you mean 'stress_threshold'" in text  # firmware.core.cue_settings' own message


def test_password_over_plain_mqtt_to_a_remote_broker_is_refused():
    found = problems(
        {"site": "s", "device": "d",
         "mqtt": {"url": "mqtt://broker.example.com:1883", "username": "u", "password": "p"}}
    )
    assert any("clear text" in p and "mqtts://" in p for p in found)


def test_tls_url_and_credentials_in_the_url(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = config.build(
        {"site": "s", "device": "d", "mqtt": {"url": "mqtts://dev%401:s3cret@broker.example.com",
                                              "ca_file": str(ca)}}
    )
    assert cfg.mqtt.tls and cfg.mqtt.port == 8883
    assert (cfg.mqtt.username, cfg.mqtt.password) == ("dev@1", "s3cret")
    missing = problems({"site": "s", "device": "d",
                        "mqtt": {"url": "mqtts://b:8883", "ca_file": str(tmp_path / "nope.pem")}})
    assert any("nope.pem does not exist" in p for p in missing)


def test_live_update_accepts_only_remote_keys_and_applies_all_or_nothing():
    cfg = config.build({"site": "s", "device": "d", "policy": {"attribution": "headset"}})
    new = config.live_update(cfg, {"sensitivity": 0.9, "outputs": {"brightness": 0.1},
                                   "policy": {"cue_budget": 2}})
    assert new.sensitivity == 0.9 and new.outputs.brightness == 0.1
    # the companion's policy keys overlay the device's own (attribution stays headset)
    assert new.policy == {"attribution": "headset", "cue_budget": 2} and new.mqtt == cfg.mqtt
    with pytest.raises(ConfigError) as err:
        config.live_update(cfg, {"sensitivity": 0.9, "outputs": {"motor_pin": 5}})
    assert "outputs.motor_pin cannot be changed remotely" in str(err.value)
    with pytest.raises(ConfigError, match="policy: "):
        config.live_update(cfg, {"policy": {"cue_budget": -1}})


def test_cli_reports_config_problems_and_exits_2(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('site = "s"\n[mqtt]\nurl = "mqtt://h:99999"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "calmcue.cli", "agent", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "device is required" in proc.stderr
    assert "port" in proc.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "calmcue.cli", "agent", "--config", str(tmp_path / "none.toml")],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 2 and "agent.example.toml" in missing.stderr


def test_service_unit_and_install_script(tmp_path):
    from agent_support import REPO

    unit = (REPO / "firmware/pi/calmcue-agent.service").read_text()
    assert "ExecStart=/opt/calmcue/venv/bin/calmcue agent --config /etc/calmcue\n" in unit
    assert "ReadWritePaths=/var/lib/calmcue\n" in unit and "ProtectSystem=strict" in unit
    assert "Restart=always" in unit and "KillSignal=SIGTERM" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze:  # the unit parses; only the not-yet-installed binary may be reported
        proc = subprocess.run([analyze, "verify", str(REPO / "firmware/pi/calmcue-agent.service")],
                              capture_output=True, text=True, timeout=60)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        assert all("is not executable" in ln for ln in lines), lines
    dry = subprocess.run(["bash", str(REPO / "firmware/pi/install.sh"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for step in ("alsa-utils", "useradd --system", "calmcue-agent.service", "--check"):
        assert step in dry.stdout, step


def test_cli_refuses_a_missing_replay_file(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(GOOD.format(state=tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "calmcue.cli", "agent", "--config", str(cfg), "--source",
         f"file:{tmp_path / 'nope.wav'}"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "nope.wav does not exist" in proc.stderr
    check = subprocess.run(
        [sys.executable, "-m", "calmcue.cli", "agent", "--config", str(cfg), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0 and "ok (site store-12" in check.stdout


def test_a_config_directory_holds_the_provisioned_json_or_the_hand_edited_toml(tmp_path):
    with pytest.raises(ConfigError, match="no agent.json or agent.toml"):
        config.load(tmp_path)
    (tmp_path / "agent.toml").write_text(GOOD.format(state=tmp_path))
    assert config.load(tmp_path).device == "counter-2"
    provisioned = {"site": "store-12", "device": "pi-0a1b2c", "mqtt": {"url": "mqtt://127.0.0.1"}}
    (tmp_path / "agent.json").write_text(json.dumps(provisioned))
    with pytest.raises(ConfigError, match="keep the one you mean"):
        config.load(tmp_path)
    (tmp_path / "agent.toml").unlink()
    assert config.load(tmp_path).device == "pi-0a1b2c"
