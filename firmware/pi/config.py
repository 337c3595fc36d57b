"""Agent configuration: one TOML or JSON file, validated before anything starts.

Settings are frozen dataclasses grouped by concern and built once; every problem in the file is
reported at once, each with what to do about it. The parts a companion may change remotely
(policy, sensitivity, brightness, haptic strength, telemetry period) go through the same
validators when they arrive on the retained `config` topic (see `live_update`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from firmware.core import events

# BCM GPIO numbers a Pi exposes on its 40-pin header; 0 and 1 are the HAT EEPROM bus.
USABLE_PINS = tuple(range(2, 28))
DEFAULT_STATE_DIR = "/var/lib/calmcue"


class ConfigError(ValueError):
    """Everything wrong with a configuration, one fix-it line per problem."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class MqttSettings:
    url: str = "mqtt://127.0.0.1:1883"
    # the other nodes of a clustered broker (docs/cluster.md), same scheme, account and TLS: the
    # agent moves to the next address whenever a connect fails or the link drops
    fallback_urls: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # TLS trust anchor; mqtts:// without it uses the system store
    cert_file: str | None = None  # client certificate, when the broker wants one
    key_file: str | None = None
    keepalive_s: int = 30
    telemetry_s: float = 60.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of `url`, then of each fallback URL."""
        out = []
        for u in (self.url, *self.fallback_urls):
            parts = urlsplit(u)
            out.append((parts.hostname or "127.0.0.1", parts.port or (8883 if self.tls else 1883)))
        return out


@dataclass(frozen=True)
class QueueSettings:
    path: str = ""  # default: <state_dir>/queue.db
    max_events: int = 10000  # beyond this the oldest events are dropped and counted


@dataclass(frozen=True)
class AudioSettings:
    source: str = "alsa:default"  # alsa[:DEVICE] or file:PATH
    chunk_s: float = 0.25  # one hop: the pipeline emits one window per chunk
    realtime: bool = True  # file sources: pace at the speed of the recording
    loop: bool = False  # file sources: start again at the end (demo kiosks)
    retry_min_s: float = 1.0
    retry_max_s: float = 30.0


@dataclass(frozen=True)
class ModelSettings:
    path: str = ""  # default: the packaged models/stress.onnx


@dataclass(frozen=True)
class OutputSettings:
    enabled: bool = True
    led_pins: tuple[int, int, int] = (17, 27, 22)  # red, green, blue (BCM)
    led_active_high: bool = True  # False for common-anode LEDs
    motor_pin: int | None = 12  # BCM12 = hardware PWM0, clear of the I2S pins 18-21
    button_pin: int | None = 23
    brightness: float = 0.6
    haptic_strength: float = 0.8
    long_press_s: float = 2.0
    enrol_press_s: float = 6.0  # hold this long: start the counter enrolment
    button_bounce_s: float = 0.02  # contact bounce of a tactile switch; 0 = off (mock pins)


@dataclass(frozen=True)
class AgentConfig:
    site: str
    device: str
    state_dir: str = DEFAULT_STATE_DIR
    sensitivity: float = 0.5  # 0 = fewest cues, 1 = most; shifts the policy thresholds
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings)
    policy: dict[str, Any] = field(
        default_factory=dict
    )  # firmware.core.policy settings, validated there

    @property
    def queue_path(self) -> Path:
        return Path(self.queue.path) if self.queue.path else Path(self.state_dir) / "queue.db"


_SECTIONS: dict[str, type] = {
    "mqtt": MqttSettings,
    "queue": QueueSettings,
    "audio": AudioSettings,
    "model": ModelSettings,
    "outputs": OutputSettings,
}
_TOP = ("site", "device", "state_dir", "sensitivity", "policy", *_SECTIONS)

# What the retained config topic may change; the rest needs someone at the device.
LIVE_KEYS = {
    "sensitivity": None,
    "policy": None,
    "outputs": ("brightness", "haptic_strength"),
    "mqtt": ("telemetry_s",),
}


def _suggest(key: str, options: tuple[str, ...] | list[str]) -> str:
    near = difflib.get_close_matches(key, list(options), n=1)
    hint = f" — did you mean '{near[0]}'?" if near else ""
    return f"unknown key '{key}'{hint} (allowed: {', '.join(options)})"


def _check_type(where: str, value: Any, default: Any, problems: list[str]) -> Any:
    """Coerce/verify one value against the type of its default; return the value to use."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.append(f"{where}: {value!r} must be true or false")
        return value
    if isinstance(default, int) and not isinstance(default, bool) or where.endswith("_pin"):
        if where.endswith("_pin") and (value is None or value == "none"):
            return None  # not fitted (TOML has no null: write "none")
        if isinstance(value, bool) or not isinstance(value, int):
            hint = (
                ' (a BCM GPIO number, or "none" when not fitted)' if where.endswith("_pin") else ""
            )
            problems.append(f"{where}: {value!r} must be a whole number{hint}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: {value!r} must be a number")
            return value
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}: {value!r} must be a list like {list(default)}")
            return value
        return tuple(value)
    if default is None or isinstance(default, str):
        if value is not None and not isinstance(value, str):
            problems.append(f"{where}: {value!r} must be a string")
        return value
    return value


def _section(name: str, cls: type, raw: Any, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"[{name}] must be a table of settings, got {type(raw).__name__}")
        return cls()
    defaults = cls()
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            problems.append(f"{name}: " + _suggest(key, names))
            continue
        kwargs[key] = _check_type(f"{name}.{key}", value, getattr(defaults, key), problems)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # only reachable through a programming error above
        problems.append(f"[{name}]: {exc}")
        return defaults


def _range(problems: list[str], where: str, value: Any, lo: float, hi: float, what: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not lo <= value <= hi:
        problems.append(f"{where}: {value} is out of range; {what}")


def _check_mqtt(m: MqttSettings, problems: list[str]) -> None:
    parts = urlsplit(m.url) if isinstance(m.url, str) else None
    if parts is None or parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        problems.append(
            f"mqtt.url: {m.url!r} is not a broker address; write mqtt://HOST:PORT (plain) or "
            "mqtts://HOST:PORT (TLS), e.g. mqtts://broker.example.com:8883"
        )
    else:
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            problems.append(f"mqtt.url: the port in {m.url!r} is not a number between 1 and 65535")
        if parts.password and m.password:
            problems.append(
                "mqtt: the password is given twice (in url and mqtt.password); keep one"
            )
    fallbacks = m.fallback_urls if isinstance(m.fallback_urls, tuple) else ()
    for u in fallbacks:
        fp = urlsplit(u) if isinstance(u, str) else None
        if fp is None or fp.scheme != getattr(parts, "scheme", None) or not fp.hostname:
            problems.append(
                f"mqtt.fallback_urls: {u!r} is not a broker address with the same scheme as "
                f"mqtt.url; write e.g. {'mqtts' if m.tls else 'mqtt'}://node2.example.com:"
                f"{8883 if m.tls else 1883} (one account, one TLS setting for every node)"
            )
        elif fp.username or fp.password:
            problems.append(
                f"mqtt.fallback_urls: {fp.hostname} carries credentials; the account is "
                "mqtt.username/password, the same on every node"
            )
        else:
            try:
                fp.port  # noqa: B018 - raises on a bad port
            except ValueError:
                problems.append(f"mqtt.fallback_urls: the port in {u!r} is not 1-65535")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(m, key)
        if isinstance(path, str) and not Path(path).is_file():
            problems.append(
                f"mqtt.{key}: {path} does not exist; copy the file there or fix the path"
            )
    if m.ca_file and not m.tls:
        problems.append(
            "mqtt.ca_file is set but mqtt.url is not mqtts://; use mqtts:// to enable TLS"
        )
    if (m.cert_file is None) != (m.key_file is None):
        problems.append("mqtt: cert_file and key_file go together; set both or neither")
    if m.password and not m.username:
        problems.append("mqtt.password is set without mqtt.username; add the username")
    hosts = [parts.hostname if parts is not None else None] + [
        urlsplit(u).hostname for u in fallbacks if isinstance(u, str)
    ]
    if (
        m.password
        and not m.tls
        and parts is not None
        and any(h not in ("127.0.0.1", "localhost", "::1") for h in hosts if h)
    ):
        problems.append(
            "mqtt: a password would cross the network in clear text; use mqtts:// "
            "(or a broker on localhost)"
        )
    _range(problems, "mqtt.keepalive_s", m.keepalive_s, 5, 600, "use 5-600 seconds (30 is typical)")
    _range(problems, "mqtt.telemetry_s", m.telemetry_s, 0.2, 3600, "use 0.2-3600 seconds")
    _range(problems, "mqtt.reconnect_min_s", m.reconnect_min_s, 0.05, 60, "use 0.05-60 seconds")
    _range(problems, "mqtt.reconnect_max_s", m.reconnect_max_s, 0.05, 3600, "use up to 3600 s")


def _check_audio(a: AudioSettings, problems: list[str]) -> None:
    if isinstance(a.source, str):
        try:
            parse_source(a.source)
        except ValueError as exc:
            problems.append(f"audio.source: {exc}")
    _range(problems, "audio.chunk_s", a.chunk_s, 0.25, 0.25, "the pipeline hop is 0.25 s")
    _range(problems, "audio.retry_min_s", a.retry_min_s, 0.01, 60, "use 0.01-60 seconds")
    _range(problems, "audio.retry_max_s", a.retry_max_s, 0.01, 3600, "use up to 3600 seconds")


def _check_outputs(o: OutputSettings, problems: list[str]) -> None:
    _range(problems, "outputs.brightness", o.brightness, 0.0, 1.0, "use 0.0 (off) to 1.0 (full)")
    _range(problems, "outputs.haptic_strength", o.haptic_strength, 0.0, 1.0, "use 0.0 to 1.0")
    _range(problems, "outputs.long_press_s", o.long_press_s, 0.5, 10, "use 0.5-10 seconds")
    if isinstance(o.enrol_press_s, (int, float)) and isinstance(o.long_press_s, (int, float)):
        if o.enrol_press_s < o.long_press_s + 2:
            problems.append(
                f"outputs.enrol_press_s ({o.enrol_press_s} s) must be at least 2 s longer than "
                f"outputs.long_press_s ({o.long_press_s} s), so a mute is not taken for an enrolment"
            )
    _range(
        problems, "outputs.button_bounce_s", o.button_bounce_s, 0, 0.5, "use 0-0.5 s (0.02 typical)"
    )
    if isinstance(o.led_pins, tuple) and len(o.led_pins) != 3:
        problems.append(
            "outputs.led_pins: give three BCM pins, red, green, blue, e.g. [17, 27, 22]"
        )
        return
    used: dict[int, str] = {}
    pins: list[tuple[str, int | None]] = [
        (f"outputs.led_pins[{i}]", p) for i, p in enumerate(o.led_pins)
    ]
    pins += [("outputs.motor_pin", o.motor_pin), ("outputs.button_pin", o.button_pin)]
    for where, pin in pins:
        if pin is None or isinstance(pin, bool) or not isinstance(pin, int):
            continue
        if pin not in USABLE_PINS:
            problems.append(
                f"{where}: GPIO{pin} is not a usable header pin; choose a BCM number from 2 to 27 "
                "(see hardware/pi-counter.md)"
            )
        elif pin in used:
            problems.append(
                f"{where}: GPIO{pin} is already used by {used[pin]}; choose another pin"
            )
        else:
            used[pin] = where


def parse_source(source: str) -> tuple[str, str]:
    """'alsa', 'alsa:hw:1,0', 'file:PATH' -> (kind, detail)."""
    kind, _, detail = source.partition(":")
    if kind == "alsa":
        return "alsa", detail or "default"
    if kind == "file":
        if not detail:
            raise ValueError("file: needs a path, e.g. file:calmcue/data/demo_conversation.wav")
        return "file", detail
    raise ValueError(
        f"{source!r} is not a source; use alsa (default device), alsa:DEVICE (e.g. alsa:hw:1,0, "
        "see `arecord -l`) or file:PATH (a WAV or FLAC recording)"
    )


def check_policy(policy: dict[str, Any]) -> list[str]:
    """Problems with the [policy] table, from firmware.core.policy's own validator when it exists."""
    if not isinstance(policy, dict):
        return ["[policy] must be a table of cue-policy settings"]
    try:
        from firmware.pi.cues import policy_problems
    except ImportError:  # pragma: no cover - cues is part of this package
        return []
    return policy_problems(policy)


def build(raw: Any, source: str = "config", base_dir: Path | None = None) -> AgentConfig:
    """Validate a parsed config document and return the settings, or raise ConfigError."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(["the file must hold a table/object of settings"], source)
    for key in raw:
        if key not in _TOP:
            problems.append(_suggest(key, _TOP))
    sections = {
        name: _section(name, cls, raw.get(name, {}), problems) for name, cls in _SECTIONS.items()
    }
    for key in ("site", "device"):
        value = raw.get(key)
        if value is None:
            problems.append(
                f'{key} is required, e.g. {key} = "{"store-12" if key == "site" else "counter-2"}"'
            )
            continue
        msg = _id_problem(key, value)
        if msg:
            problems.append(f"{msg} (got {value!r})")
    state_dir = raw.get("state_dir", DEFAULT_STATE_DIR)
    if not isinstance(state_dir, str):
        problems.append('state_dir must be a path string, e.g. "/var/lib/calmcue"')
        state_dir = DEFAULT_STATE_DIR
    sensitivity = raw.get("sensitivity", 0.5)
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, (int, float)):
        problems.append(f"sensitivity: {sensitivity!r} must be a number from 0 to 1")
        sensitivity = 0.5
    _range(
        problems, "sensitivity", sensitivity, 0, 1, "use 0 (fewest cues) to 1 (most), 0.5 default"
    )
    policy = raw.get("policy", {})
    problems += check_policy(policy)
    mqtt = sections["mqtt"]
    if base_dir is not None:  # relative file paths are relative to the config file
        mqtt = dataclasses.replace(
            mqtt,
            **{
                k: str(base_dir / getattr(mqtt, k))
                for k in ("ca_file", "cert_file", "key_file")
                if isinstance(getattr(mqtt, k), str) and not Path(getattr(mqtt, k)).is_absolute()
            },
        )
        sections["mqtt"] = mqtt
    _check_mqtt(mqtt, problems)
    _check_audio(sections["audio"], problems)
    _check_outputs(sections["outputs"], problems)
    q = sections["queue"]
    _range(problems, "queue.max_events", q.max_events, 10, 10_000_000, "use 10 to 10000000 events")
    m = sections["model"]
    if isinstance(m.path, str) and m.path != "" and not Path(m.path).is_file():
        problems.append(
            f"model.path: {m.path} does not exist; leave it empty for the packaged model"
        )
    if problems:
        raise ConfigError(problems, source)
    # credentials in the URL (mqtt://user:pass@host) are moved to the fields
    parts = urlsplit(mqtt.url)
    if parts.username and not mqtt.username:
        mqtt = dataclasses.replace(
            mqtt,
            username=unquote(parts.username),
            password=unquote(parts.password) if parts.password else mqtt.password,
        )
        sections["mqtt"] = mqtt
    return AgentConfig(
        site=raw["site"],
        device=raw["device"],
        state_dir=state_dir,
        sensitivity=float(sensitivity),
        policy=dict(policy),
        **sections,
    )


CONFIG_NAMES = ("agent.json", "agent.toml")  # written by `calmcue device provision` / by hand


def resolve(path: str | os.PathLike[str]) -> Path:
    """A config file, or a directory holding exactly one of CONFIG_NAMES (the systemd unit
    passes /etc/calmcue, so a provisioned agent.json and a hand-edited agent.toml both work)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = [path / n for n in CONFIG_NAMES if (path / n).is_file()]
    if len(found) > 1:
        raise ConfigError(
            [f"both {found[0].name} (from 'calmcue device provision') and {found[1].name} are in "
             f"{path}; keep the one you mean and delete the other"],
            str(path),
        )
    if not found:
        raise ConfigError(
            [f"{path} has no agent.json or agent.toml; provision the device ('calmcue device "
             "provision --target pi' at the IT bench) or copy agent.toml.example "
             "(firmware/pi/agent.example.toml) there as agent.toml and edit it"],
            str(path),
        )
    return found[0]


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Read a .toml or .json config file (or the one in a config directory) and validate it."""
    path = resolve(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            [f"{path} does not exist; copy firmware/pi/agent.example.toml there and edit it"],
            str(path),
        ) from None
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            [f"not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}"], str(path)
        ) from None
    return build(raw, str(path), base_dir=path.parent)


def to_dict(cfg: AgentConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out["outputs"]["led_pins"] = list(cfg.outputs.led_pins)
    return out


def live_update(cfg: AgentConfig, update: Any) -> AgentConfig:
    """Overlay a remote config document on `cfg` (for the retained `config` topic: the settings
    from the device's file, so each retained document replaces the previous one; for commands:
    the running settings). `policy` merges key by key over the file's policy.

    Only LIVE_KEYS may change; anything else is refused with the reason, and nothing is applied
    unless everything is valid."""
    if not isinstance(update, dict):
        raise ConfigError(["the config payload must be a JSON object"], "remote config")
    problems: list[str] = []
    for key, value in update.items():
        if key not in LIVE_KEYS:
            problems.append(
                f"{key} cannot be changed remotely (only {', '.join(LIVE_KEYS)}); "
                "edit the agent's config file on the device"
            )
            continue
        allowed = LIVE_KEYS[key]
        if allowed is not None:
            if not isinstance(value, dict):
                problems.append(f"{key} must be an object")
                continue
            for sub in value:
                if sub not in allowed:
                    problems.append(
                        f"{key}.{sub} cannot be changed remotely (only {', '.join(allowed)})"
                    )
    if problems:
        raise ConfigError(problems, "remote config")
    raw = to_dict(cfg)
    for key, value in update.items():
        if isinstance(value, dict):
            raw[key].update(value)  # the device's own file settings stay unless overridden
        else:
            raw[key] = value
    return build(raw, "remote config")


def _id_problem(name: str, value: object) -> str | None:
    why = events.must_be("id", None, value)
    return None if why is None else f"{name} must be {why}"
