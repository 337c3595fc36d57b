"""The agent's durable event queue and its processing-time watchdog."""

from __future__ import annotations

import logging
import time

from agent_support import agent_config, silence, tiny_model, write_wav

from firmware.core import wire
from firmware.pi.agent import Agent
from firmware.pi.store import EventQueue


def test_queue_is_fifo_bounded_counts_drops_and_survives_reopening(tmp_path):
    q = EventQueue(tmp_path / "q.db", max_events=10)
    assert q.next_boot() == 1
    for i in range(15):
        q.put("t", b"%d" % i)
    assert q.depth() == 10 and q.dropped == 5  # the five oldest went, and are counted
    first = q.peek(3)
    assert [e.payload for e in first] == [b"5", b"6", b"7"]
    assert [e.payload for e in q.peek(2, after_id=first[-1].id)] == [b"8", b"9"]
    q.ack(first[1].id)  # a PUBACK out of order removes only its own row
    q.close()
    q = EventQueue(tmp_path / "q.db", max_events=10)
    assert q.next_boot() == 2 and q.dropped == 5
    assert [e.payload for e in q.peek(100)] == [b"5", b"7", b"8", b"9", b"10", b"11", b"12",
                                                 b"13", b"14"]
    q.close()


def test_a_processing_overrun_is_logged_with_its_duration(tmp_path, caplog):
    wav = write_wav(tmp_path / "quiet.wav", [silence(1)])
    cfg = agent_config(tmp_path, 1, model={"path": str(tiny_model(tmp_path / "model"))})
    agent = Agent(cfg, source=f"file:{wav}", realtime=False)
    try:
        real = agent.pipeline.process

        def slow(chunk):
            time.sleep(0.3)  # longer than the 0.25 s the chunk lasts
            return real(chunk)

        agent.pipeline.process = slow  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="calmcue.agent"):
            agent.process(silence(0.25).astype("int16"))
        assert agent.overruns == 1 and agent.telemetry()["overruns"] == 1
        msg = [r.getMessage() for r in caplog.records if "overrun" in r.getMessage()]
        assert msg and msg[0].startswith("processing overrun: 3") and "for a 250 ms chunk" in msg[0]
        agent.pipeline.process = real  # type: ignore[method-assign]
        agent.process(silence(0.25).astype("int16"))
        assert agent.overruns == 1  # a normal chunk is far inside its budget
    finally:
        agent.close()


def test_a_stream_that_ends_mid_conversation_closes_it(tmp_path):
    from agent_support import speechlike


    wav = write_wav(tmp_path / "cut.wav", [silence(0.5), speechlike(4, False, 1)])  # no pause
    cfg = agent_config(tmp_path, 1, model={"path": str(tiny_model(tmp_path / "model"))})
    agent = Agent(cfg, source=f"file:{wav}", realtime=False)
    agent.run(drain_s=0.1)  # no broker: the events stay queued
    q = agent.queue.__class__(tmp_path / "state" / "queue.db")
    rows = [wire.decode(e.payload) for e in q.peek(100)]
    q.close()
    assert [(e["type"], e["phase"]) for e in rows] == [("conversation", "start"),
                                                        ("conversation", "end")]
    assert rows[0]["conv"] == rows[1]["conv"] and rows[1]["conv_s"] > 2


def test_a_model_that_does_not_match_its_card_is_refused(tmp_path):
    import hashlib
    import json

    import pytest

    from firmware.pi.scoring import ModelError, OnnxScorer

    path = tiny_model(tmp_path / "model")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert OnnxScorer(path).model_hash == meta["onnx_sha256"][:16]
    path.write_bytes(path.read_bytes()[:-1] + b"\0")  # one byte changed
    with pytest.raises(ModelError, match="does not match stress.json"):
        OnnxScorer(path)
    meta["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta["feature_order"] = ["speech", "voiced"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="different feature order"):
        OnnxScorer(path)


def test_a_44k_stereo_flac_replays_as_16k_mono(tmp_path):
    import numpy as np
    import soundfile as sf

    from firmware.pi.audio import FileSource

    t = np.arange(44100 * 2) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(tmp_path / "a.flac"), np.stack([tone, tone], axis=1), 44100)
    chunks = list(FileSource(tmp_path / "a.flac", realtime=False).chunks())
    assert len(chunks) == 8 and all(c.dtype == np.int16 and len(c) == 4000 for c in chunks)
    peak = max(int(np.abs(c).max()) for c in chunks)
    assert abs(peak - 0.5 * 32767) < 200  # same level after mixing down and resampling
    spectrum = np.abs(np.fft.rfft(chunks[3].astype(float)))
    assert abs(np.argmax(spectrum) * 16000 / 4000 - 440) <= 4  # still 440 Hz at 16 kHz


def test_no_model_no_agent(tmp_path, monkeypatch):
    import pytest

    from firmware.pi import scoring

    monkeypatch.setattr(scoring, "DEFAULT_MODEL", tmp_path / "gone.onnx")
    with pytest.raises(scoring.ModelError, match="gone.onnx not found; reinstall calmcue"):
        Agent(agent_config(tmp_path, 1))
    assert not (tmp_path / "state" / "queue.db").exists()  # nothing started, no boot counted
