"""The headset fails over between broker nodes (issue 18, docs/cluster.md): device.json's
`mqtt.fallback` lists the other nodes as [host, port]; a failed connect or a lost session moves
the next try to the next node, round the ring. On the real MicroPython unix port with two real
Mosquittos standing in for two nodes and a dead first address."""

from __future__ import annotations

import json

from fw_harness import Collector, Device
from test_fw_headset import HEAP

from calmcue.broker import Mosquitto, free_port

SITE_DEV = "calmcue/v1/demo/headset-1/"


def test_the_headset_moves_to_the_next_node_when_its_node_is_gone(
    host_build, headset_wav, tmp_path, mosquitto
):
    dead = free_port()  # nothing listens there: the first node is down
    other = Mosquitto(workdir=tmp_path / "mqtt2")
    other.workdir.mkdir()
    other.start()
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "device.json").write_text(json.dumps({
        "site": "demo", "device": "headset-1",
        "wifi": {"ssid": "store-wifi", "password": "not-a-real-one"},
        "mqtt": {"host": "127.0.0.1", "port": dead, "keepalive": 60,
                 "fallback": [["127.0.0.1", mosquitto.port], ["127.0.0.1", other.port]]},
    }))  # fmt: skip
    seen = [Collector(mosquitto.port), Collector(other.port)]
    dev = Device(host_build, flash, headset_wav, mosquitto.port, heap=HEAP)
    try:
        st = dev.cmd("audio 4")  # the dead address fails; the second node answers
        assert st["mqtt"] and st["connects"] == 1
        dev.cmd("press 200")
        dev.cmd("audio 1")
        seen[0].wait_for(lambda m: m[0] == SITE_DEV + "evt/button", pump=dev.pump)

        mosquitto.stop()  # its node goes away: the session breaks, the next try is node 3
        st = dev.cmd("audio 4")
        assert st["mqtt"] and st["connects"] == 2
        dev.cmd("press 200")
        dev.cmd("audio 1")
        seen[1].wait_for(lambda m: m[0] == SITE_DEV + "evt/button", pump=dev.pump)
    finally:
        dev.close()
        for c in seen:
            c.close()
        other.close()
    logs = [x["log"] for x in dev.lines if "log" in x]
    connected = [x for x in logs if x.startswith("mqtt connected to")]
    assert connected == [f"mqtt connected to 127.0.0.1:{mosquitto.port}",
                         f"mqtt connected to 127.0.0.1:{other.port}"], logs  # fmt: skip
    assert any("connect" in x and "fail" in x.lower() for x in logs), logs  # the dead one
