"""The fleet simulator (`calmcue bench fleet`) against a real Mosquitto started here and a real
companion process: 200 devices, a few seconds of traffic well above the field rate, a reconnect
storm and one device killed. Every event stored exactly once, the killed device's LWT reaches
the companion, every device comes back after the storm."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from calmcue.bench_fleet import run
from calmcue.broker import Mosquitto
from calmcue.cli import main as calmcue_main
from firmware.core import wire

N = 200


@pytest.fixture
def broker():  # type: ignore[no-untyped-def]
    with Mosquitto() as b:
        yield b


def _retained_status(port: int, topic_filter: str) -> dict[str, bytes]:
    """What a subscriber gets now: the retained status of each device."""
    got: dict[str, bytes] = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-test-reader")
    c.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic_filter, qos=1)
    c.loop_start()
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < 3 and len(got) < N:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return got


def test_fleet_200_devices_storm_and_lwt(broker: Mosquitto, tmp_path: Path) -> None:
    res = run(N, rate_multiple=50.0, duration=4.0, mqtt_url=broker.url, storm=True, kill=1,
              out=tmp_path / "fleet.json")  # fmt: skip
    assert res["connect"] == {**res["connect"], "connected": N, "expected": N}
    # every device dropped at once and came back, and the companion saw them online again
    assert res["storm"]["connected"] == N and res["storm"]["companion_all_online"]
    assert res["events"]["reconnects"] >= N
    ev = res["events"]
    # 200 devices x 50 x 0.02/s x 4 s: about 800 events, from the real event code
    assert ev["generated"] > 400
    assert ev["stored"] == ev["generated"] == ev["acked"]
    assert ev["lost"] == 0 and ev["unexpected"] == 0 and ev["duplicate_rows"] == 0
    assert ev["dead_letters"] == 0
    # the killed device's LWT: the companion records it offline
    assert res["lwt_offline_s"] is not None and res["lwt_offline_s"] < 10
    # latencies were measured on real rows and the real feed
    assert res["event_to_stored_ms"]["p95"] is not None
    assert res["event_to_feed_ms"]["events"] > 0
    assert res["call_manager_to_feed_ms"]["events"] > 0
    assert res["companion"]["rss_mb"] > 0
    # after the clean stop every device said offline itself (retained), as the agent does
    status = _retained_status(broker.port, wire.topic("+", "+", "status"))
    assert len(status) == N and set(status.values()) == {b"offline"}
    saved = json.loads((tmp_path / "fleet.json").read_text())["runs"]
    assert saved[-1]["devices"] == N


def test_fleet_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert calmcue_main(["bench", "fleet", "--devices", "0"]) == 2
    assert "--devices must be at least 1" in capsys.readouterr().err
    assert calmcue_main(["bench", "fleet", "--devices", "5", "--duration", "0"]) == 2
