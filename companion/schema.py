"""Event schema v1 as the companion sees it.

The device side (firmware/core/events.py) validates the same JSON; the shared vectors in
tests/data/event_vectors.json keep both in step. The models are closed (`extra="forbid"`): an
event carrying audio, a transcript, features or staff identity is refused, not stored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from firmware.core import cue_table

SCHEMA_VERSION = 1
MAX_BYTES = 512
TOPIC_ROOT = "calmcue/v1"

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
ConvId = Annotated[str, Field(pattern=r"^[0-9a-f]{8,16}$")]
# Every bound is one the database can hold: boot/seq/up_ms are BIGINT (signed 64-bit on
# PostgreSQL and SQLite), counts are INTEGER (signed 32-bit on PostgreSQL), strings fit their
# VARCHAR lengths (the patterns cap them), floats are finite and at most 1e10. An event the
# schema accepts is one the database stores (tests/test_event_schema.py checks the edges).
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
NonNegInt = Annotated[int, Field(ge=0, le=INT64_MAX, strict=True)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True)]
Seconds = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)]
def _not_bool(v: Any) -> Any:
    """JSON `true` equals 1 in Python; the version must be the number 1."""
    if isinstance(v, bool):
        raise ValueError("must be the number 1, not a boolean")
    return v


def _cue_name(v: Any) -> Any:
    if v not in cue_table.names():
        raise ValueError("must be one of " + ", ".join(cue_table.names()))
    return v


# The cue names of firmware/core/cue_table.py, listed in the API's JSON schema as an enum.
Cue = Annotated[
    str,
    AfterValidator(_cue_name),
    Field(json_schema_extra={"enum": list(cue_table.names())}),  # type: ignore[dict-item]
]


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: Annotated[Literal[1], BeforeValidator(_not_bool)]
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
    level: Annotated[int, Field(ge=1, le=cue_table.ALERT_LEVEL, strict=True)]
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
    cues: Count | None = None
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
        raise EventRejected(_reasons(exc)) from None


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """Split `calmcue/v1/<site>/<device>/evt/<type>` into (site, device, type); None if not one."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "evt":
        return None
    return parts[2], parts[3], parts[5]


# ---- device status, telemetry, alert commands ---------------------------------------------------

TELE_MAX_BYTES = 1024
ALERT_CMD_MAX_BYTES = 512
_PRINTABLE = re.compile(r"[^\x20-\x7e]")  # what a firmware/model name may keep


def parse_status(payload: bytes) -> str:
    """`online` or `offline` (the device's LWT); raises EventRejected otherwise."""
    status = payload.strip()
    if status not in (b"online", b"offline"):
        raise EventRejected("status must be 'online' or 'offline'")
    return status.decode()


class Telemetry(BaseModel):
    """The parts of a device's telemetry the registry keeps (the rest is stored as sent).

    ESP32 firmware says `fw`, the Pi agent `agent`; `model` is a name or `{"id": ...}`. Names are
    cut to 64 printable ASCII characters, so no NUL byte or lone surrogate reaches the database.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    firmware: str | None = None
    model: str | None = None
    online: bool = True

    @classmethod
    def from_dict(cls, tele: dict[str, Any]) -> Telemetry:
        fw = next((tele[k] for k in ("fw", "agent", "firmware") if tele.get(k) is not None), None)
        model = tele.get("model")
        if isinstance(model, dict):
            model = model.get("id")
        return cls(firmware=_name(fw), model=_name(model), online=tele.get("online") is not False)


def _name(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list)):
        return None
    return _PRINTABLE.sub("?", str(v))[:64]


def parse_telemetry(payload: bytes) -> tuple[dict[str, Any], Telemetry, str]:
    """A JSON object of at most TELE_MAX_BYTES: (the object, its registry fields, the text to
    store). Raises EventRejected with the reason."""
    if len(payload) > TELE_MAX_BYTES:
        raise EventRejected(
            f"telemetry is {len(payload)} bytes, over the {TELE_MAX_BYTES} byte limit"
        )
    try:
        text = payload.decode("utf-8")
        tele = json.loads(text)
    except UnicodeDecodeError:
        raise EventRejected("telemetry is not valid UTF-8") from None
    except RecursionError:
        raise EventRejected("telemetry is nested too deeply") from None
    except ValueError:
        raise EventRejected("telemetry is not valid JSON") from None
    if not isinstance(tele, dict):
        raise EventRejected("telemetry must be a JSON object")
    if "\x00" in text or _has_surrogate(text):
        raise EventRejected("telemetry contains a NUL byte or a lone surrogate")
    return tele, Telemetry.from_dict(tele), text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class AlertCommand(BaseModel):
    """`{"id": <alert id>, "by": "<who>"}` on calmcue/v1/<site>/alert/ack|resolve."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Annotated[int, Field(ge=1, le=INT64_MAX, strict=True)]
    by: Annotated[str, Field(max_length=48, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None


_alert_adapter: TypeAdapter[AlertCommand] = TypeAdapter(AlertCommand)


def parse_alert_command(payload: bytes) -> AlertCommand:
    if len(payload) > ALERT_CMD_MAX_BYTES:
        raise EventRejected(
            f"alert command is {len(payload)} bytes, over the {ALERT_CMD_MAX_BYTES} byte limit"
        )
    try:
        return _alert_adapter.validate_json(payload)
    except ValidationError as exc:
        raise EventRejected(
            'alert command must be {"id": <alert id>, "by": "<who>"}: ' + _reasons(exc)
        ) from None


def _reasons(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
