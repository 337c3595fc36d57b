"""The cue policy as the agent runs it: `firmware.core.policy` (portable, shared with the ESP32) with
its settings validated by `firmware.core.cue_settings`, plus the agent's two knobs on top:

- an optional base stress threshold in place of the policy's default (`model_threshold`;
  the agent passes none: the default was chosen on whole conversations for the shipped
  model, and the headset runs the same one);
- sensitivity (0..1, 0.5 = as calibrated) moves the stress and tense thresholds by up to
  +-0.15, kept inside the policy's own rules between thresholds.

New settings apply at once when no conversation is open, else from the next conversation: a
policy restarted mid-way would lose the conversation it is judging.
"""

from __future__ import annotations

import os
from typing import Any

from firmware.core import cue_settings, policy

SENSITIVITY_SPAN = 0.3


def policy_problems(settings: dict[str, Any]) -> list[str]:
    """Fix-it messages for a [policy] table (empty when valid)."""
    _, errors = cue_settings.validate_settings(settings)
    return [f"policy: {e}" for e in errors]


def _shift(base: float, sensitivity: float) -> float:
    return base + (0.5 - sensitivity) * SENSITIVITY_SPAN


def effective_settings(
    settings: dict[str, Any], sensitivity: float, model_threshold: float | None
) -> dict[str, Any]:
    s, _ = cue_settings.validate_settings(settings)
    thr = float(settings.get("stress_threshold", model_threshold or s["stress_threshold"]))
    lo = s["baseline_max"] + s["settle_margin"] + 0.01
    hi = s["intense_threshold"] - 0.01
    thr = min(hi, max(lo, _shift(thr, sensitivity)))
    tense = min(thr, max(0.1, _shift(float(s["tense_threshold"]), sensitivity)))
    out = dict(settings)
    out["stress_threshold"] = round(thr, 3)
    out["tense_threshold"] = round(tense, 3)
    return out


class CuePolicy:
    """`process(window)` with t, score, speaker, rate, level_db, speech ->
    [(event type, fields)] for firmware.core.events.Stamper."""

    def __init__(
        self,
        settings: dict[str, Any],
        sensitivity: float = 0.5,
        model_threshold: float | None = None,
    ):
        self.model_threshold = model_threshold
        self._pending: tuple[dict[str, Any], float] | None = None
        self._make(settings, sensitivity)

    def _make(self, settings: dict[str, Any], sensitivity: float) -> None:
        self.settings = dict(settings)
        self.sensitivity = sensitivity
        self.effective = effective_settings(settings, sensitivity, self.model_threshold)
        self._impl = policy.Policy(self.effective, rand_bytes=os.urandom)

    @property
    def in_conversation(self) -> bool:
        return self._impl.conv is not None

    def update(self, settings: dict[str, Any], sensitivity: float) -> str:
        if self.in_conversation:
            self._pending = (settings, sensitivity)
            return "next_conversation"
        self._make(settings, sensitivity)
        return "now"

    def process(self, w: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = [policy.event_fields(d) for d in self._impl.process(w)]
        if self._pending is not None and not self.in_conversation:
            settings, sensitivity = self._pending
            self._pending = None
            self._make(settings, sensitivity)
        return out

    def finish(self, t: float) -> list[tuple[str, dict[str, Any]]]:
        return [policy.event_fields(d) for d in self._impl.finish(t)]

    def reset(self) -> None:
        self._impl.reset()
