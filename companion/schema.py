"""Event schema v1 as the companion sees it.

The device side (firmware/events.py) validates the same JSON; the shared vectors in
tests/data/event_vectors.json keep both in step. The models are closed (`extra="forbid"`): an
event carrying audio, a transcript, features or staff identity is refused, not stored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1
MAX_BYTES = 512
TOPIC_ROOT = "calmcue/v1"

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
ConvId = Annotated[str, Field(pattern=r"^[0-9a-f]{8,16}$")]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
Seconds = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)]
Cue = Literal["slow_down", "empathize", "call_manager", "settled"]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Literal[1]
    site: Ident
    device: Ident
    boot: NonNegInt
    seq: NonNegInt
    up_ms: NonNegInt
    ts: Seconds | None = None


class CueEvent(_EventBase):
    type: Literal["cue"]
    conv: ConvId
    cue: Cue
    level: Annotated[int, Field(ge=1, le=3, strict=True)]
    score: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    conv_s: Seconds
    stress_s: Seconds | None = None
    ttd_s: Seconds | None = None
    reason: Ident | None = None


class ConversationEvent(_EventBase):
    type: Literal["conversation"]
    conv: ConvId
    phase: Literal["start", "end"]
    conv_s: Seconds
    cues: NonNegInt | None = None
    peak: Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)] | None = None


class ButtonEvent(_EventBase):
    type: Literal["button"]
    action: Literal["ack", "mute", "unmute"]


Event = Annotated[CueEvent | ConversationEvent | ButtonEvent, Field(discriminator="type")]
_event_adapter: TypeAdapter[CueEvent | ConversationEvent | ButtonEvent] = TypeAdapter(Event)


class EventRejected(ValueError):
    """A payload that is not a valid v1 event; `reason` says why in words a person can act on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_event(payload: bytes) -> CueEvent | ConversationEvent | ButtonEvent:
    """Validate raw MQTT payload bytes. Raises EventRejected with the reason."""
    if len(payload) > MAX_BYTES:
        raise EventRejected(f"payload is {len(payload)} bytes, over the {MAX_BYTES} byte limit")
    try:
        return _event_adapter.validate_json(payload)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "payload"
            parts.append(f"{loc}: {err['msg']}")
        raise EventRejected("; ".join(parts)) from None


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """Split `calmcue/v1/<site>/<device>/evt/<type>` into (site, device, type); None if not one."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "evt":
        return None
    return parts[2], parts[3], parts[5]
