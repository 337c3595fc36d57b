"""The Pi agent as a process: killed with SIGKILL while the broker is away, its queue survives on
disk and drains, in order and exactly once, after a restart; SIGTERM is a clean stop."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys

from agent_support import (
    REPO,
    Subscriber,
    agent_config,
    silence,
    speechlike,
    tiny_model,
    wait_until,
    write_wav,
)


def queued(db) -> list[bytes]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return [bytes(r[0]) for r in con.execute("SELECT payload FROM outbox ORDER BY id")]
    except sqlite3.OperationalError:  # the agent is creating it right now
        return []


def start_agent(cfg_path, source: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "calmcue.cli", "agent", "--config", str(cfg_path),
         "--source", source, *flags],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_sigkill_with_broker_down_then_restart_drains_the_queue(mosquitto, tmp_path):
    talk = write_wav(tmp_path / "talk.wav",
                     [speechlike(3, False, 1), speechlike(6, True, 2), silence(4)])
    quiet = write_wav(tmp_path / "quiet.wav", [silence(1)])
    cfg = agent_config(
        tmp_path, mosquitto.port,
        policy={"conversation_gap_s": 2.0, "stress_from_unknown": True},
        model={"path": str(tiny_model(tmp_path / "model"))},
        audio={"loop": True},
    )
    cfg_path = tmp_path / "agent.json"
    cfg_path.write_text(json.dumps(cfg))
    db = tmp_path / "state" / "queue.db"

    mosquitto.stop()  # the Wi-Fi is down
    first = start_agent(cfg_path, f"file:{talk}", "--fast")
    try:
        assert wait_until(lambda: len(queued(db)) >= 12, 60), first.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # power cut: no goodbye, nothing flushed on purpose
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    backlog = queued(db)
    events = [json.loads(p) for p in backlog]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert {e["boot"] for e in events} == {1}
    assert {"conversation", "cue"} <= {e["type"] for e in events}

    mosquitto.start()
    sub = Subscriber(mosquitto.port)
    second = start_agent(cfg_path, f"file:{quiet}", "--realtime")
    try:
        got = wait_until(lambda: len(sub.on("/evt/cue") + sub.on("/evt/conversation"))
                         >= len(backlog), 30)
        assert got, f"only {len(sub.events())} of {len(backlog)} queued events arrived"
        tele = wait_until(lambda: sub.on("/tele"), 10)
        assert json.loads(tele[-1])["boot"] == 2  # the boot counter survived too
        assert wait_until(lambda: queued(db) == [], 10)
        wait_until(lambda: False, 0.3)  # room for any duplicate to show up
        arrived = [p for t, p, _ in sub.messages if "/evt/" in t]
        assert arrived == backlog  # every byte, once each, in order
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0  # SIGTERM is a clean stop (systemd)
        assert wait_until(lambda: sub.on("/status")[-1:] == [b"offline"], 5)
        print(f"{len(backlog)} events queued before SIGKILL, all delivered once after restart")
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(5)
        sub.close()


def test_an_agent_that_dies_is_reported_offline_by_its_last_will(mosquitto, tmp_path):
    quiet = write_wav(tmp_path / "quiet.wav", [silence(1)])
    cfg_path = tmp_path / "agent.json"
    cfg_path.write_text(json.dumps(agent_config(tmp_path, mosquitto.port, audio={"loop": True})))
    sub = Subscriber(mosquitto.port)
    agent = start_agent(cfg_path, f"file:{quiet}", "--realtime")
    try:
        assert wait_until(lambda: sub.on("/status") == [b"online"], 30)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert wait_until(lambda: sub.on("/status") == [b"online", b"offline"], 10)
        late = Subscriber(mosquitto.port)  # a dashboard that connects later sees it too
        try:
            assert wait_until(lambda: late.on("/status") == [b"offline"], 5)
        finally:
            late.close()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)
        sub.close()
