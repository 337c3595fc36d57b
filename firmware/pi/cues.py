"""The cue policy as the agent sees it: window in, event fields out.

`firmware.policy` (the portable policy shared with the ESP32) is used when present. Until it
lands, `PlaceholderPolicy` stands in: conversations from speech after silence, `empathize` after a
few stressed windows, `call_manager` when stress persists, `settled` when it falls back. Both
give the agent the same thing: a list of `(event_type, fields)` for firmware.events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from firmware import events

_PLACEHOLDER_KEYS = {
    "start_speech": (
        0.3,
        0.0,
        1.0,
        "fraction of a window that must be speech to start a conversation",
    ),
    "end_silence_s": (6.0, 0.5, 120.0, "seconds of silence that end a conversation"),
    "debounce": (4, 1, 40, "stressed windows in a row before a cue"),
    "refractory_s": (8.0, 0.0, 600.0, "seconds between two cues"),
    "manager_after_s": (10.0, 1.0, 600.0, "seconds of stress after empathize before call_manager"),
    "settle_windows": (8, 1, 100, "calm windows after a cue before settled"),
    "budget": (3, 1, 20, "cues per conversation at most"),
}


def policy_problems(policy: dict[str, Any]) -> list[str]:
    try:
        from firmware import policy as portable  # type: ignore[attr-defined]
    except ImportError:
        portable = None
    if portable is not None and hasattr(portable, "problems"):
        return [
            f"policy.{p}" if not p.startswith("policy") else p for p in portable.problems(policy)
        ]
    out = []
    for key, value in policy.items():
        if key not in _PLACEHOLDER_KEYS:
            out.append(f"policy: unknown key '{key}' (allowed: {', '.join(_PLACEHOLDER_KEYS)})")
            continue
        _, lo, hi, what = _PLACEHOLDER_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            out.append(f"policy.{key}: {value!r} must be a number from {lo} to {hi} ({what})")
    return out


@dataclass
class _Conversation:
    conv: str
    start_t: float
    last_speech_t: float
    cues: int = 0
    peak: float = 0.0
    stressed: int = 0
    calm: int = 0
    stress_start: float | None = None
    last_cue: str | None = None
    last_cue_t: float = -1e9
    first_cue_t: float | None = None


class PlaceholderPolicy:
    """Stand-in for firmware.policy: same inputs, same event fields."""

    def __init__(self, settings: dict[str, Any], threshold: float = 0.5, sensitivity: float = 0.5):
        self.set(settings, threshold, sensitivity)
        self._conv: _Conversation | None = None

    def set(self, settings: dict[str, Any], threshold: float, sensitivity: float) -> None:
        s = {k: v[0] for k, v in _PLACEHOLDER_KEYS.items()}
        s.update(settings)
        self.s = s
        # sensitivity 0.5 keeps the calibrated threshold; 1.0 lowers it by 0.15, 0.0 raises it.
        self.threshold = min(0.95, max(0.05, threshold + (0.5 - sensitivity) * 0.3))

    def reset(self) -> None:
        self._conv = None

    def process(self, t: float, score: float, speech: float) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        c = self._conv
        if c is None:
            if speech >= self.s["start_speech"]:
                c = self._conv = _Conversation(events.new_conversation_id(os.urandom), t, t)
                out.append(("conversation", {"conv": c.conv, "phase": "start", "conv_s": 0.0}))
            return out
        if speech >= self.s["start_speech"]:
            c.last_speech_t = t
        elif t - c.last_speech_t >= self.s["end_silence_s"]:
            out.append(
                (
                    "conversation",
                    {
                        "conv": c.conv,
                        "phase": "end",
                        "conv_s": round(t - c.start_t, 2),
                        "cues": c.cues,
                        "peak": round(c.peak, 3),
                    },
                )
            )
            self._conv = None
            return out
        c.peak = max(c.peak, score)
        conv_s = round(t - c.start_t, 2)
        if score >= self.threshold and speech >= self.s["start_speech"]:
            c.stressed += 1
            c.calm = 0
            if c.stress_start is None:
                c.stress_start = t
        elif speech >= self.s["start_speech"]:
            c.calm += 1
            c.stressed = 0
            c.stress_start = None
        cue = None
        level = 1
        reason = None
        since = t - c.last_cue_t
        if (
            c.stressed >= self.s["debounce"]
            and since >= self.s["refractory_s"]
            and c.cues < self.s["budget"]
        ):
            stress_s = t - (c.stress_start or t)
            if c.last_cue is None or c.last_cue == "settled":
                cue, level, reason = "empathize", 1, "customer_stress"
            elif c.last_cue == "empathize" and stress_s >= self.s["manager_after_s"]:
                cue, level, reason = "call_manager", 2, "sustained"
        elif (
            c.calm >= self.s["settle_windows"]
            and c.last_cue in ("empathize", "call_manager")
            and c.first_cue_t is not None
        ):
            out.append(
                (
                    "cue",
                    {
                        "conv": c.conv,
                        "cue": "settled",
                        "level": 1,
                        "score": round(score, 3),
                        "conv_s": conv_s,
                        "ttd_s": round(t - c.first_cue_t, 2),
                        "reason": "calm",
                    },
                )
            )
            c.last_cue = "settled"
            c.first_cue_t = None
            return out
        if cue is not None:
            c.cues += 1
            c.last_cue = cue
            c.last_cue_t = t
            if c.first_cue_t is None:
                c.first_cue_t = t
            fields = {
                "conv": c.conv,
                "cue": cue,
                "level": level,
                "score": round(score, 3),
                "conv_s": conv_s,
                "stress_s": round(t - (c.stress_start or t), 2),
            }
            if reason:
                fields["reason"] = reason
            out.append(("cue", fields))
        return out
