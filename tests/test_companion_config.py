"""Per-site and per-device configuration: validated with the devices' own validators, published
retained in the shape each device kind applies; quiet hours hold back manager alerts."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import httpx
import pytest
from companion_helpers import Publisher, Subscriber, cue, running_companion, wait_until

from firmware.core import cue_settings
from firmware.headset import config as esp32_config
from firmware.pi import config as pi_config

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


@pytest.fixture
def setup(db_url, mosquitto):
    with running_companion(db_url, mosquitto.url) as comp:
        pub = Publisher(mosquitto.port)
        pub.send("calmcue/v1/store-1/headset-1/tele", {"fw": "0.2.0", "model": "stress-v1"})
        pub.send("calmcue/v1/store-1/counter-2/tele", {"agent": "0.1.0", "model": "stress-v1"})
        wait_until(lambda: len(httpx.get(comp.url + "/api/devices").json()) == 2, what="registry")
        comp.ingest.flush()
        yield comp, pub
        pub.close()


def put(comp, path, body):
    return httpx.put(comp.url + path, json=body)


def test_site_config_is_validated_and_published_retained_per_device_kind(setup, mosquitto):
    comp, _ = setup
    r = put(
        comp,
        "/api/sites/store-1/config",
        {"brightness": 0.4, "eu_mode": True, "policy": {"stress_threshold": 0.7}},
    )
    assert r.status_code == 200, r.text
    assert sorted(r.json()["published"]) == [
        "calmcue/v1/store-1/counter-2/config",
        "calmcue/v1/store-1/headset-1/config",
    ]
    r = put(comp, "/api/devices/store-1/headset-1/config", {"brightness": 0.1, "haptic": 0.5})
    assert r.status_code == 200 and r.json()["effective"]["brightness"] == 0.1

    # a device connecting later gets the retained config
    late = Subscriber(mosquitto.port, "calmcue/v1/store-1/+/config")
    got = wait_until(
        lambda: (
            {m[1].split("/")[3]: m[2] for m in late.messages} if len(late.messages) == 2 else None
        ),
        what="2 retained configs",
    )
    late.close()
    esp = got["headset-1"]
    assert (esp["brightness"], esp["haptic"], esp["eu_mode"]) == (0.1, 0.5, True)
    assert esp["policy"] == {"stress_threshold": 0.7, "eu_mode": True} and esp["rev"] > 0
    assert esp32_config.problems(esp, lambda p: cue_settings.validate_settings(p)[1]) == []

    pi = got["counter-2"]
    assert pi == {
        "policy": {"stress_threshold": 0.7, "eu_mode": True},
        "outputs": {"brightness": 0.4},
    }
    applied = pi_config.live_update(pi_config.build({"site": "store-1", "device": "counter-2"}), pi)
    assert applied.outputs.brightness == 0.4

    info = httpx.get(comp.url + "/api/devices/store-1/counter-2/config").json()
    assert info["kind"] == "pi" and info["site_config"]["brightness"] == 0.4


BAD = [
    ({"brightness": 3}, "brightness: Input should be less than or equal to 1"),
    ({"policy": {"stres_threshold": 0.7}}, "did you mean 'stress_threshold'"),
    ({"policy": {"intense_threshold": 0.5}}, "intense_threshold (0.5) must be above"),
    ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "not a time like 22:00"),
    ({"volume": 3}, "volume: Extra inputs are not permitted"),
    ({"policy": {"eu_mode": True}}, "eu_mode at the top level"),
]


def test_bad_config_is_refused_with_the_reason_and_nothing_is_published(setup, mosquitto):
    comp, _ = setup
    watch = Subscriber(mosquitto.port, "calmcue/v1/store-1/+/config")
    for body, message in BAD:
        r = put(comp, "/api/sites/store-1/config", body)
        assert r.status_code == 422 and message in r.json()["detail"], (body, r.text)
    time.sleep(0.2)
    assert watch.messages == []
    watch.close()


def test_device_override_that_breaks_a_cross_rule_is_refused(setup):
    comp, _ = setup
    assert (
        put(comp, "/api/sites/store-1/config", {"policy": {"stress_threshold": 0.8}}).status_code
        == 200
    )
    r = put(comp, "/api/devices/store-1/counter-2/config", {"policy": {"intense_threshold": 0.75}})
    assert r.status_code == 422 and "intense_threshold" in r.json()["detail"]
    assert put(comp, "/api/devices/store-1/nope/config", {"haptic": 0.2}).status_code == 404


def test_quiet_hours_hold_back_manager_alerts(setup):
    comp, pub = setup
    now = datetime.now()
    quiet = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }
    assert put(comp, "/api/sites/store-1/config", {"quiet_hours": quiet}).status_code == 200
    pub.event(cue(site="store-1", device="counter-2", seq=1, cue_name="call_manager", level=3))
    wait_until(lambda: comp.ingest.counters().stored == 1, what="the cue stored")
    comp.ingest.flush()
    assert httpx.get(comp.url + "/api/alerts").json() == []
    # outside quiet hours it alerts
    later = {
        "start": (now + timedelta(hours=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=3)).strftime("%H:%M"),
    }
    assert put(comp, "/api/sites/store-1/config", {"quiet_hours": later}).status_code == 200
    pub.event(cue(site="store-1", device="counter-2", seq=2, cue_name="call_manager", level=3))
    wait_until(lambda: httpx.get(comp.url + "/api/alerts").json(), what="an alert")
