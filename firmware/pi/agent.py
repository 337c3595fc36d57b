"""The Raspberry Pi edge agent: microphone → features → stress model → cue policy → LED, motor
and events, with store-and-forward MQTT, telemetry, live config and commands.

    agent = Agent(config.load("/etc/calmcue"))   # or Agent(dict) / Agent(path); see docs/agent.md
    agent.run(stop_event)          # returns when stop_event is set (or a file source ends)

Threads: the caller's thread runs capture and the pipeline; `Link` owns MQTT; `Outputs` plays
patterns. Audio only ever lives in the chunk being processed and the front end's window buffer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from calmcue.shared import __version__
from firmware.core import events, wire
from firmware.core.attribution_modes import make_attribution
from firmware.pi import config as cfgmod
from firmware.pi.audio import MicError, open_source
from firmware.pi.config import AgentConfig, ConfigError
from firmware.pi.cues import CuePolicy
from firmware.pi.link import Link
from firmware.pi.scoring import make_front_end, make_scorer
from firmware.pi.store import EventQueue

log = logging.getLogger("calmcue.agent")
CHUNK = 4000  # 0.25 s at 16 kHz: one hop
_ATTRIBUTION_KEYS = (
    "attribution",
    "min_speech",
    "headset_wearer_db",
    "near_field_db",
    "pitch_tol_st",
    "level_tol_db",
    "enrol_min_s",
    "hop_s",
)


def _serialised(method: Any) -> Any:
    """Run under the pipeline's lock: remote config and commands arrive on the MQTT thread while
    the capture thread is in process()."""

    def run(self: Pipeline, *args: Any) -> Any:
        with self._lock:
            return method(self, *args)

    run.__doc__ = method.__doc__
    return run


class Pipeline:
    """Pure processing: PCM chunk in, (event type, fields) out. No I/O, no clock."""

    def __init__(self, cfg: AgentConfig):
        self._lock = threading.Lock()
        self.scorer = make_scorer(cfg.model.path)
        self.front_end, self.front_end_name = make_front_end()
        # The policy's own stress_threshold, as on the headset: it was chosen on whole
        # conversations (calmcue model evaluate --conversations), not from the model's clip
        # threshold, so both devices cue alike.
        self.policy = CuePolicy(cfg.policy, cfg.sensitivity)
        self.attribution = make_attribution(cfg.policy)
        self.enrolling = False
        self.windows = 0
        self.t = 0.0  # end of the latest window, seconds of audio since the stream started
        self.last_score = 0.0

    @_serialised
    def start_enrolment(self) -> str | None:
        """Counter mode: the next voiced windows are the staff member alone (shift start).
        Returns an error message when this attribution mode has no enrolment."""
        if not hasattr(self.attribution, "enrol"):
            return 'enrolment is only for attribution = "counter" (policy.attribution)'
        self.attribution.forget()
        self.enrolling = True
        return None

    def _enrol(self, w: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        a = self.attribution
        voiced_s = a.enrol(float(w["speech"]), float(w["level_db"]), float(w["f0_hz"]))
        if voiced_s >= a.n_min * a.hop:
            a.finish_enrolment()
            self.enrolling = False
            return [("enrolled", {})]
        return []

    @_serialised
    def configure(self, cfg: AgentConfig) -> str:
        """New policy settings / sensitivity: 'now' or 'next_conversation'."""
        old = self.policy.settings
        if any(old.get(k) != cfg.policy.get(k) for k in _ATTRIBUTION_KEYS):
            self.attribution = make_attribution(cfg.policy)
        return self.policy.update(cfg.policy, cfg.sensitivity)

    @_serialised
    def process(self, chunk: np.ndarray) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for w in self.front_end.process(chunk):
            self.windows += 1
            self.t = float(w["t"])
            score = self.scorer.score(w["features"])
            self.last_score = score
            if self.enrolling:
                out += self._enrol(w)
                continue
            speaker = self.attribution.process(
                float(w["speech"]), float(w["level_db"]), float(w["f0_hz"])
            )
            decided = self.policy.process(
                {
                    "t": float(w["t"]),
                    "score": score,
                    "speaker": speaker,
                    "rate": float(w["rate"]),
                    "level_db": float(w["level_db"]),
                    "speech": float(w["speech"]),
                }
            )
            for etype, fields in decided:
                if etype == "conversation" and fields.get("phase") == "start":
                    # the feature baseline is per conversation (models/features.py)
                    getattr(self.front_end, "new_conversation", lambda: None)()
            out += decided
        return out

    @_serialised
    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The stream ends (file end, microphone lost, agent stopping): close the open
        conversation, if any."""
        return self.policy.finish(self.t)

    @_serialised
    def reset(self) -> None:
        self.front_end.reset()
        self.policy.reset()


class SystemdNotifier:
    """sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET when systemd started us with
    Type=notify. `watchdog()` sends WATCHDOG=1 at most every half WatchdogSec (WATCHDOG_USEC), so
    calling it every chunk costs nothing; if the capture loop hangs, systemd kills and restarts
    the agent. Outside systemd every call is a no-op."""

    def __init__(self, env: Any = os.environ):
        import socket

        self._addr: str = env.get("NOTIFY_SOCKET") or ""
        if self._addr.startswith("@"):  # abstract namespace
            self._addr = "\0" + self._addr[1:]
        usec = env.get("WATCHDOG_USEC", "")
        self.interval_s = int(usec) / 2e6 if usec.isdigit() else None
        self._next = 0.0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self._addr else None

    def notify(self, state: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(state.encode(), self._addr)
        except OSError as exc:  # systemd gone (shutdown): nothing to tell
            log.debug("sd_notify %s failed: %s", state, exc)

    def watchdog(self) -> None:
        if self.interval_s is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_TIMESYNC = "/run/systemd/timesync"
_PLAUSIBLE = 1_704_067_200  # 2024-01-01: a Pi without RTC boots earlier than this


def clock_known() -> bool:
    """Is the wall clock trustworthy? A Pi has no RTC (fake-hwclock restores the last shutdown
    time), so where systemd-timesyncd runs, wait for its 'synchronized' flag. Events carry `ts`
    only then; `boot` + `up_ms` order them regardless."""
    if time.time() < _PLAUSIBLE:
        return False
    if os.path.isdir(_TIMESYNC):
        return os.path.exists(os.path.join(_TIMESYNC, "synchronized"))
    return True


class _CpuMeter:
    """Process CPU use between two telemetry reports, from os.times() (no psutil needed)."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float]:
        t = os.times()
        return t.user + t.system, time.monotonic()

    def percent(self) -> float:
        now = self._sample()
        cpu = now[0] - self._last[0]
        wall = now[1] - self._last[1]
        self._last = now
        return round(100.0 * cpu / wall, 1) if wall > 0 else 0.0


def _rss_kb() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class Agent:
    def __init__(
        self,
        cfg: AgentConfig | dict[str, Any] | str | os.PathLike[str],
        source: str | None = None,
        realtime: bool | None = None,
        outputs: Any = None,
        pin_factory: Any = None,
    ):
        if isinstance(cfg, dict):
            cfg = cfgmod.build(cfg)
        elif not isinstance(cfg, AgentConfig):
            cfg = cfgmod.load(cfg)
        if source is not None or realtime is not None:
            audio = cfg.audio
            if source is not None:
                cfgmod.parse_source(source)  # fail early with the fix-it message
                audio = dataclasses.replace(audio, source=source)
            if realtime is not None:
                audio = dataclasses.replace(audio, realtime=realtime)
            cfg = dataclasses.replace(cfg, audio=audio)
        self.cfg = cfg
        self.file_cfg = cfg  # what the retained remote config is laid over
        self.pipeline = Pipeline(cfg)  # first: a missing model must not count as a boot
        self.queue = EventQueue(cfg.queue_path, cfg.queue.max_events)
        self.boot = self.queue.next_boot()
        self.stamper = events.Stamper(cfg.site, cfg.device, self.boot)
        self.started = time.monotonic()
        self.mic_ok = False
        self.mic_error: str | None = None
        self.muted = False
        self.overruns = 0
        self.audio_s = 0.0
        self.busy_s = 0.0
        self.chunk_max_s = 0.0  # slowest chunk since the last telemetry
        self.lost_s = 0.0  # audio the capture dropped (sources that can tell: arecord overruns)
        self._source: Any = None
        self.outputs_error: str | None = None  # GPIO wanted (outputs.enabled) but unavailable
        self.systemd = SystemdNotifier()
        self._cpu = _CpuMeter()
        self._lock = threading.Lock()  # stamping: pipeline thread, button thread, MQTT thread
        self.link = Link(
            cfg.mqtt,
            cfg.site,
            cfg.device,
            self.queue,
            self.telemetry,
            self._on_config,
            self._on_command,
        )
        self.outputs = outputs  # after the link: a button press may queue an event at once
        if self.outputs is None and cfg.outputs.enabled:
            self.outputs = self._make_outputs(pin_factory)
        elif self.outputs is not None:
            self.outputs.on_ack = self._on_ack
            self.outputs.on_mute = self._on_mute
            self.outputs.on_enrol = self._on_enrol
        log.info(
            "agent %s boot %d: site %s device %s, source %s, model %s (%s), front end %s",
            __version__,
            self.boot,
            cfg.site,
            cfg.device,
            cfg.audio.source,
            self.pipeline.scorer.model_id,
            self.pipeline.scorer.model_hash,
            self.pipeline.front_end_name,
        )

    def _make_outputs(self, pin_factory: Any) -> Any:
        from firmware.pi.outputs import Outputs

        try:
            return Outputs.from_settings(
                self.cfg.outputs,
                pin_factory=pin_factory,
                on_ack=self._on_ack,
                on_mute=self._on_mute,
                on_enrol=self._on_enrol,
            )
        except Exception as exc:  # no GPIO here (a laptop, a container): run without outputs
            # Said in telemetry too: a counter device without its LED/motor cues nobody.
            self.outputs_error = (
                f"LED/motor/button unavailable ({type(exc).__name__}: {exc}); check the wiring "
                "and that the service user is in the gpio group, or set outputs.enabled = false"
            )
            log.error("%s; running without outputs", self.outputs_error)
            return None

    # --- events --------------------------------------------------------------------------------

    def up_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def emit(self, etype: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Stamp, validate and queue one event; the link delivers it."""
        with self._lock:
            ts = round(time.time(), 3) if clock_known() else None
            event = self.stamper.stamp(etype, fields, self.up_ms(), ts=ts)
            payload = events.encode(event)
            self.queue.put(wire.event_topic(event), payload)
        self.link.kick()
        return event

    def _on_ack(self) -> None:
        self.emit("button", {"action": "ack"})

    def _on_enrol(self) -> str | None:
        """Start the counter enrolment (long button hold or cmd/enrol); an error message when
        this device's attribution mode has none."""
        err = self.pipeline.start_enrolment()
        if err:
            log.warning("enrolment refused: %s", err)
        else:
            log.info("enrolment started: the staff member talks alone for a few seconds")
            if self.outputs is not None:
                self.outputs.show("enrolling")
        return err

    def _on_mute(self, muted: bool) -> None:
        self.muted = muted
        self.emit("button", {"action": "mute" if muted else "unmute"})
        self.link.request_telemetry()

    # --- remote control -------------------------------------------------------------------------

    def _apply(self, cfg: AgentConfig) -> str:
        self.cfg = cfg
        applies = self.pipeline.configure(cfg)
        self.link.settings = cfg.mqtt
        if self.outputs is not None:
            self.outputs.update(cfg.outputs)
        return applies

    def _on_config(self, payload: Any, base: AgentConfig | None = None) -> dict[str, Any]:
        try:
            cfg = cfgmod.live_update(base or self.file_cfg, payload)
        except ConfigError as exc:
            log.warning("remote config refused: %s", exc)
            return {"ok": False, "errors": exc.problems}
        applies = self._apply(cfg)
        log.info("remote config applied (%s): %s", applies, sorted(payload))
        return {"ok": True, "applies": applies}

    def _on_command(self, name: str, payload: Any) -> dict[str, Any]:
        value = payload.get("value") if isinstance(payload, dict) else payload
        if name == "mute":
            if isinstance(value, str) and value.lower() in ("on", "off", "true", "false"):
                value = value.lower() in ("on", "true")
            if value is None:
                value = True
            if not isinstance(value, bool):
                return {"ok": False, "error": 'mute takes true or false (or "on"/"off")'}
            if self.outputs is not None:
                self.outputs.set_muted(value)
            if value != self.muted:
                self._on_mute(value)
            return {"ok": True, "muted": value}
        if name == "enrol":
            err = self._on_enrol()
            return {"ok": err is None, **({"error": err} if err else {"enrolling": True})}
        updates = {
            "sensitivity": lambda v: {"sensitivity": v},
            "led_brightness": lambda v: {"outputs": {"brightness": v}},
            "haptic_strength": lambda v: {"outputs": {"haptic_strength": v}},
        }
        if name not in updates:
            return {
                "ok": False,
                "error": f"unknown command {name!r}; use one of mute, enrol, " + ", ".join(updates),
            }
        result = self._on_config(updates[name](value), base=self.cfg)
        if result["ok"]:
            result["value"] = value
        return result

    def telemetry(self) -> dict[str, Any]:
        scorer = self.pipeline.scorer
        return {
            "agent": __version__,
            "boot": self.boot,
            "model": scorer.model_id,
            "model_hash": scorer.model_hash,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "cpu_pct": self._cpu.percent(),
            "mem_kb": _rss_kb(),
            "mic_ok": self.mic_ok,
            "mic_error": self.mic_error[:200] if self.mic_error else None,  # tele stays < 1 KB
            "muted": self.muted,
            "queue": self.queue.depth(),
            "dropped": self.queue.dropped,
            "overruns": self.overruns,
            "rtf": round(self.busy_s / self.audio_s, 4) if self.audio_s else None,
            "chunk_max_ms": round(self._take_chunk_max() * 1000, 1),
            "audio_lost_s": round(self.lost_s + getattr(self._source, "lost_s", 0.0), 3),
            "outputs_ok": self.outputs is not None or not self.cfg.outputs.enabled,
            "outputs_error": self.outputs_error[:200] if self.outputs_error else None,
            "source": self.cfg.audio.source,
        }

    def _take_chunk_max(self) -> float:
        worst, self.chunk_max_s = self.chunk_max_s, 0.0
        return worst

    # --- the main loop --------------------------------------------------------------------------

    def process(self, chunk: np.ndarray) -> list[dict[str, Any]]:
        """Run one chunk through the pipeline, drive the outputs, queue the events."""
        t0 = time.perf_counter()
        decided = self.pipeline.process(chunk)
        sent = []
        for etype, fields in decided:
            if etype == "enrolled":  # not an event: the staff profile stays on the device
                log.info("staff voice enrolled")
                if self.outputs is not None:
                    self.outputs.show("enrolled")
                continue
            sent.append(self.emit(etype, fields))
            if etype == "cue" and self.outputs is not None:
                self.outputs.show(fields["cue"])
        took = time.perf_counter() - t0
        budget = len(chunk) / 16000.0
        self.busy_s += took
        self.chunk_max_s = max(self.chunk_max_s, took)
        self.audio_s += budget
        if took > budget:
            self.overruns += 1
            log.warning("processing overrun: %.1f ms for a %.0f ms chunk", took * 1e3, budget * 1e3)
        return sent

    def _finish_stream(self) -> None:
        for etype, fields in self.pipeline.finish():
            self.emit(etype, fields)

    def _set_mic(self, ok: bool, error: str | None = None) -> None:
        if ok != self.mic_ok or error != self.mic_error:
            self.mic_ok, self.mic_error = ok, error
            if self.outputs is not None:
                self.outputs.set_fault(not ok)
            self.link.request_telemetry()

    def run(self, stop: threading.Event | None = None, drain_s: float = 10.0) -> int:
        """Capture and process until `stop` is set; a file source without `loop` ends the run
        once its events are delivered (or `drain_s` passes). Returns an exit code."""
        stop = stop or threading.Event()
        self.link.start()
        self.systemd.notify("READY=1")
        a = self.cfg.audio
        backoff = a.retry_min_s
        try:
            while not stop.is_set():
                self.systemd.watchdog()
                source = self._source = open_source(a.source, CHUNK, realtime=a.realtime, loop=a.loop)
                try:
                    for chunk in source.chunks():
                        if not self.mic_ok:
                            log.info("microphone %s ok", source.name)
                            self._set_mic(True)
                            backoff = a.retry_min_s
                        self.process(chunk)
                        self.systemd.watchdog()
                        if stop.is_set():
                            break
                    else:
                        if a.source.startswith("file:"):
                            log.info("end of %s", source.name)
                            self._finish_stream()
                            self.link.wait_drained(drain_s)
                            return 0
                except MicError as exc:
                    self._set_mic(False, str(exc))
                    self._finish_stream()
                    self.pipeline.reset()
                    log.error("%s; retrying in %.1f s", exc, backoff)
                    self._wait(stop, backoff)
                    backoff = min(backoff * 2, a.retry_max_s)
                finally:
                    source.close()
                    self._source = None
                    self.lost_s += getattr(source, "lost_s", 0.0)
            self.systemd.notify("STOPPING=1")
            self._finish_stream()  # stopping: the open conversation ends here
            if self.link.connected:
                self.link.wait_drained(2.0)
            return 0
        finally:
            self.close()

    def _wait(self, stop: threading.Event, seconds: float) -> None:
        """Sleep (the microphone's retry backoff) while still telling systemd we are alive."""
        end = time.monotonic() + seconds
        while not stop.wait(max(0.0, min(1.0, end - time.monotonic()))):
            self.systemd.watchdog()
            if time.monotonic() >= end:
                return

    def close(self) -> None:
        self.link.stop()
        if self.outputs is not None:
            self.outputs.close()
        self.queue.close()
        self.systemd.close()


def demo_config(
    mqtt_url: str,
    state_dir: str | os.PathLike[str],
    wav: str | os.PathLike[str] | None = None,
    site: str = "demo",
    device: str = "counter-1",
    loop: bool = True,
) -> dict[str, Any]:
    """Settings for the simulated counter of `calmcue run`: replays the bundled conversation in
    real time, no GPIO, and (no enrolment in a demo) every voice may carry stress."""
    from pathlib import Path

    wav = wav or Path(__file__).resolve().parents[2] / "calmcue" / "data" / "demo_conversation.wav"
    return {
        "site": site,
        "device": device,
        "state_dir": str(state_dir),
        "mqtt": {"url": mqtt_url, "telemetry_s": 10.0},
        "audio": {"source": f"file:{wav}", "realtime": True, "loop": loop},
        "outputs": {"enabled": False},
        "policy": {"attribution": "none", "stress_from_unknown": True},
    }
