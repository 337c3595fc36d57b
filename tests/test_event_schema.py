"""One event schema on both sides: the device encoder (CPython and the real MicroPython
interpreter) and the companion's pydantic model accept and refuse exactly the same payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from companion.schema import EventRejected, parse_event, parse_topic
from firmware.core import events, wire

TYPES = ("cue", "conversation", "button")

VECTORS = json.loads((Path(__file__).parent / "data" / "event_vectors.json").read_text())


@pytest.mark.parametrize("event", VECTORS["valid"], ids=lambda e: f"{e['type']}")
def test_valid_events_pass_both_sides(event):
    data = events.encode(event)
    assert len(data) <= events.MAX_BYTES
    parsed = parse_event(data)
    assert parsed.type == event["type"]
    assert wire.decode(data) == event


@pytest.mark.parametrize("name", sorted(VECTORS["invalid"]))
def test_invalid_events_refused_by_both_sides(name):
    event = VECTORS["invalid"][name]
    assert events.problems(event), f"device encoder accepted {name}"
    with pytest.raises(EventRejected) as err:
        parse_event(json.dumps(event).encode())
    assert err.value.reason  # a reason a person can read


def test_privacy_fields_are_named_in_the_refusal():
    event = dict(VECTORS["valid"][0], audio="AAAA", transcript="hello")
    msgs = events.problems(event)
    assert "audio is not an allowed field" in msgs
    assert "transcript is not an allowed field" in msgs
    with pytest.raises(EventRejected, match="audio"):
        parse_event(json.dumps(event).encode())


def test_no_schema_field_can_carry_audio_or_identity():
    # The closed schema is the privacy guarantee: no field name suggests audio, text or people,
    # and every string field is a short constrained token.
    from companion.schema import ButtonEvent, ConversationEvent, CueEvent

    banned = ("audio", "pcm", "sample", "wav", "transcript", "text", "feature", "mfcc",
              "staff", "employee", "name", "user", "speaker", "voice", "embedding")
    for model in (CueEvent, ConversationEvent, ButtonEvent):
        for field in model.model_fields:
            assert not any(b in field for b in banned), (model.__name__, field)
    common = events.fields("*")  # name, required, kind, limits of each field
    assert tuple(common[common.index("type") + 3]) == TYPES and events.fields("dance") is None
    for schema in (events.fields("*"), *(events.fields(t) for t in TYPES)):
        for field in schema[::4]:  # name, required, kind, limits
            assert not any(b in field for b in banned), field


def test_oversized_and_garbage_payloads_rejected():
    with pytest.raises(EventRejected, match="byte limit"):
        parse_event(b"{" + b" " * 600 + b"}")
    with pytest.raises(EventRejected):
        parse_event(b"\xff\xfe not json")
    with pytest.raises(events.EventError, match="not valid JSON"):
        wire.decode(b"\xff\xfe not json")


def test_topics():
    ev = VECTORS["valid"][0]
    t = wire.event_topic(ev)
    assert t == "calmcue/v1/store-001/counter-2/evt/cue"
    assert parse_topic(t) == ("store-001", "counter-2", "cue")
    assert parse_topic("calmcue/v1/store-001/counter-2/status") is None


def test_micropython_encoder_agrees(mpy):
    """The same vectors through firmware/core/events.py on the real MicroPython interpreter."""
    code = (
        "import json\nfrom firmware.core import events\n"
        f"V = json.loads({json.dumps(json.dumps(VECTORS))})\n"
        "for e in V['valid']:\n"
        "    d = events.encode(e)\n"  # the headset has no decode(): it never reads events
        "    assert json.loads(d) == e and events.problems(json.loads(d)) == [], e\n"
        "    print('ok', len(d))\n"
        "for name in V['invalid']:\n"
        "    p = events.problems(V['invalid'][name])\n"
        "    print('refused' if p else 'ACCEPTED', name)\n"
    )
    out = mpy(code, heapsize="64K").stdout.splitlines()
    assert [line.split()[0] for line in out[: len(VECTORS["valid"])]] == ["ok"] * len(VECTORS["valid"])
    refused = [line for line in out if line.startswith("refused")]
    accepted = [line for line in out if line.startswith("ACCEPTED")]
    assert not accepted
    assert len(refused) == len(VECTORS["invalid"])
    # Identical bytes from both interpreters, so the companion sees the same thing from a Pi
    # and an ESP32. (MicroPython's json.dumps uses the same separators as CPython's.)
    for line, ev in zip(out[: len(VECTORS["valid"])], VECTORS["valid"], strict=True):
        assert int(line.split()[1]) == len(events.encode(ev))


def test_stamper_counts_and_validates():
    st = events.Stamper("store-001", "counter-2", boot=4)
    a = st.stamp("button", {"action": "ack"}, up_ms=10)
    b = st.stamp("button", {"action": "mute"}, up_ms=20, ts=1795000000.0)
    assert (a["seq"], b["seq"], b["boot"]) == (0, 1, 4)
    assert "ts" not in a and b["ts"] == 1795000000.0
    with pytest.raises(events.EventError, match="transcript"):
        st.stamp("button", {"action": "ack", "transcript": "x"}, up_ms=30)
    assert st.seq == 2  # a refused event does not consume a sequence number
    import os

    conv = events.new_conversation_id(os.urandom)
    assert len(conv) == 8 and int(conv, 16) >= 0
