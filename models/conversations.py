"""Conversation benchmark: what staff experience, not what clips score.

Whole conversations are built from one speaker's RAVDESS clips (the customer), joined with
pauses over a noise floor, optionally with a second actor as the staff member taking turns, and
replayed through the real device pipeline: the streaming feature front end, the stress model
*that never saw that speaker* (the speaker-grouped fold models of `calmcue model train`), speaker
attribution and the cue policy. The figures are the ones staff feel: calm conversations that
got a stress cue, stress cues per hour of calm speech, escalations cued and how fast, happy
conversations cued, and `settled` after the calm return.

    specs = build_specs(clips, per_speaker=3, seed=0)          # seeded, many per speaker
    audio = render(spec, CONDITIONS["white-60"], pools, seed)  # int16 16 kHz + timeline
    cues = run_numpy(audio, net, settings)                     # decisions of the policy
    row = summarise(results)                                   # the figures of one condition

`calmcue model evaluate --conversations` runs every condition (also in `make bench`), and with
`--engine both` replays a slice through the MicroPython unix port too, comparing cue timelines.
Audio exists only in memory here; nothing derived from it but cue timelines is written.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware.core import cue_table
from models import augment
from models.corpora import Clip

log = logging.getLogger("calmcue.model")
RATE = 16000
REPO = Path(__file__).resolve().parent.parent

# What each kind of conversation is made of: (label pool, number of clips), in order.
# "calm" pools draw neutral and calm clips; "aroused" draws happy and surprised.
KINDS: dict[str, tuple[tuple[str, int], ...]] = {
    "calm": (("calm", 16),),
    "angry": (("calm", 6), ("angry", 8), ("calm", 6)),
    "fearful": (("calm", 6), ("fearful", 8), ("calm", 6)),
    "happy": (("calm", 6), ("aroused", 8), ("calm", 6)),
    "sad": (("calm", 6), ("sad", 8), ("calm", 6)),
}
POOLS = {
    "calm": ("neutral", "calm"),
    "angry": ("angry",),
    "fearful": ("fearful",),
    "aroused": ("happy", "surprised"),
    "sad": ("sad",),
}
STRESS_KINDS = ("angry", "fearful")
STRESS_CUES = tuple(c for c in cue_table.names() if cue_table.level(c) >= 2)  # empathize and up


@dataclass(frozen=True)
class Condition:
    """How a conversation is heard. Levels in dBFS (RMS of the floor), SNR in dB."""

    name: str
    floor: str = "white"  # none | white | pink | hum
    floor_db: float = -60.0
    babble_snr: float | None = None  # other speakers' speech mixed in at this SNR
    gain_db: float = 0.0  # recording level of the speech (clips at full scale)
    pause_s: tuple[float, float] = (0.3, 0.9)
    mode: str = "none"  # none (no attribution, stress_from_unknown), counter, headset
    wearer: str = "calm"  # counter/headset: what the staff voice's turns are (WEARER_POOLS)
    # Render with this condition's seeds (lead-in, pauses, floor, which turn is picked), so the
    # two rows differ only in what this one changes: a paired comparison.
    seed_from: str = ""


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("silence", floor="none"),
        Condition("white-70", floor_db=-70.0),
        Condition("white-60", floor_db=-60.0),
        Condition("white-45", floor_db=-45.0),
        Condition("white-35", floor_db=-35.0),
        Condition("pink-50", floor="pink", floor_db=-50.0),
        Condition("hum-45", floor="hum", floor_db=-45.0),
        Condition("babble-20dB", babble_snr=20.0),
        Condition("babble-10dB", babble_snr=10.0),
        Condition("level-20dB", gain_db=-20.0),
        Condition("level+10dB", gain_db=10.0),
        Condition("pauses-0.2s", pause_s=(0.2, 0.2)),
        Condition("pauses-2s", pause_s=(2.0, 2.0)),
        Condition("counter", mode="counter"),
        Condition("headset", mode="headset"),
        Condition("headset-lively", mode="headset", wearer="lively", seed_from="headset"),
    )
}
# The clips a staff voice's turns are drawn from (labels of the staff actor's clips). Its gain is
# always set from its calm clips (POOLS["calm"]): "lively" is a wearer who sounds cheerful or
# surprised all along, at the gain their calm speech sets. (A share of neutral turns, RAVDESS's
# 4 neutral clips beside 8 happy and 8 surprised, made the row's cost hard to see: docs/model.md.)
WEARER_POOLS: dict[str, tuple[str, ...]] = {
    "calm": POOLS["calm"],
    "lively": POOLS["aroused"],
}
# Headset mode's levels (docs/model.md, "Headset condition"). RAVDESS is recorded at its own
# level (calm speech around -48 dBFS), so the headset row sets the levels a headset hears: the
# wearer's mouth a few cm from the microphone speaks calmly at HEADSET_WEARER_DBFS (the level
# `headset_wearer_db` assumes for the shipped microphone at its default gain), the customer about
# a metre away is HEADSET_CUSTOMER_BELOW_DB quieter when calm (inverse-square law from ~10 cm to
# ~1 m). Each voice gets one gain per conversation, set from its calm clips' speech level, so a
# shouting customer is louder than their calm turns by exactly what the clips carry.
HEADSET_WEARER_DBFS = -30.0
HEADSET_CUSTOMER_BELOW_DB = 20.0
# The slice `make test` replays on both engines as a regression guard.
QUICK_CONDITIONS = ("white-60", "counter")


@dataclass(frozen=True)
class Spec:
    """One conversation: the customer's clips in order, and (counter/headset) a staff actor."""

    kind: str
    speaker: str
    clips: tuple[int, ...]  # indices into the clip list
    stress_span: tuple[int, int] | None  # [first, last) positions of the middle stretch
    staff: str  # another speaker, for the modes with a staff voice
    seed: int


@dataclass
class Audio:
    """A rendered conversation: PCM, where its middle stretch is, how much customer speech."""

    pcm: np.ndarray  # int16
    onset_s: float | None  # first speech of the middle stretch
    stretch_end_s: float | None  # end of the middle stretch's last clip
    calm_speech_s: float  # customer speech in calm clips (for false cues per hour)
    calm_until_s: float  # end of the calm opening (everything, for a calm conversation)
    enrol: np.ndarray | None = None  # counter mode: the staff member alone at shift start


@dataclass
class Result:
    spec: Spec
    condition: str
    cues: list[tuple[float, str]]  # (t, cue) of every cue decision
    onset_s: float | None
    stretch_end_s: float | None
    calm_speech_s: float
    calm_until_s: float
    conversations: int = 1  # conversation starts the policy saw
    extra: dict[str, Any] = field(default_factory=dict)


# ---- conversations --------------------------------------------------------------------------------


def build_specs(
    clips: Sequence[Clip], per_speaker: int = 3, seed: int = 0, kinds: Iterable[str] = KINDS
) -> list[Spec]:
    """`per_speaker` conversations of each kind for every speaker, seeded."""
    by = _by_speaker(clips)
    speakers = sorted(by)
    out = []
    for kind in kinds:
        for si, spk in enumerate(speakers):
            for k in range(per_speaker):
                rng = np.random.default_rng([seed, list(KINDS).index(kind), si, k])
                order: list[int] = []
                span = None
                for pool, count in KINDS[kind]:
                    cand = [i for lab in POOLS[pool] for i in by[spk].get(lab, [])]
                    if not cand:
                        raise ValueError(f"speaker {spk} has no {pool} clips for a {kind} talk")
                    picks = _draw(cand, count, rng)
                    if pool != "calm":
                        span = (len(order), len(order) + count)
                    order += picks
                others = [s for s in speakers if s != spk]
                staff = others[int(rng.integers(len(others)))]
                out.append(Spec(kind, spk, tuple(order), span, staff, int(rng.integers(2**31))))
    return out


def _draw(cand: list[int], count: int, rng: np.random.Generator) -> list[int]:
    # Each clip once before any repeats, no clip twice in a row.
    picks: list[int] = []
    while len(picks) < count:
        block = list(rng.permutation(cand))
        if picks and len(block) > 1 and block[0] == picks[-1]:
            block.append(block.pop(0))
        picks += [int(i) for i in block]
    return picks[:count]


def _by_speaker(clips: Sequence[Clip]) -> dict[str, dict[str, list[int]]]:
    by: dict[str, dict[str, list[int]]] = {}
    for i, c in enumerate(clips):
        by.setdefault(c.speaker, {}).setdefault(c.label, []).append(i)
    return by


# ---- audio ----------------------------------------------------------------------------------------


class ClipCache:
    """Decoded clips as float32, read once (RAVDESS is ~1 GB decoded; only used ones load)."""

    def __init__(self, clips: Sequence[Clip]):
        self.clips = clips
        self._cache: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        x = self._cache.get(i)
        if x is None:
            from models.dataset import load_float

            x = load_float(self.clips[i].path)
            self._cache[i] = x
        return x


def _speech_onset(x: np.ndarray) -> float:
    """Seconds into a clip where speech starts: the first 10 ms frame within 30 dB of its
    loudest frame (RAVDESS clips open with about half a second of room tone)."""
    f = 160
    k = x.size // f
    if k == 0:
        return 0.0
    p = np.mean(x[: k * f].reshape(k, f).astype(np.float64) ** 2, axis=1) + 1e-12
    loud = np.nonzero(p >= p.max() * 1e-3)[0]
    return float(loud[0] * f / RATE) if loud.size else 0.0


def _floor(cond: Condition, n: int, rng: np.random.Generator) -> np.ndarray:
    if cond.floor == "none" or n == 0:
        return np.zeros(n, np.float32)
    return augment.floor_noise(cond.floor, n, cond.floor_db, rng)


def render(
    spec: Spec,
    cond: Condition,
    cache: ClipCache,
    babble_pool: Sequence[int] = (),
    staff_pool: Sequence[int] = (),
    staff_turns: Sequence[int] | None = None,
) -> Audio:
    """The conversation's audio under `cond`, with the timeline the figures need.

    Counter and headset modes put a staff turn (a clip of `spec.staff` from `staff_turns`,
    by default `staff_pool`: its calm clips) after every customer clip but the last. In headset
    mode the wearer's gain puts their calm speech (`staff_pool`) at HEADSET_WEARER_DBFS, the
    customer's calm speech HEADSET_CUSTOMER_BELOW_DB below it; turns from other clips
    (`headset-lively`) keep that gain.
    """
    turns = staff_pool if staff_turns is None else staff_turns
    rng = np.random.default_rng([spec.seed, list(CONDITIONS).index(cond.seed_from or cond.name)])
    lead = int(rng.uniform(0.5, 1.5) * RATE)  # silence before the first word
    parts: list[np.ndarray] = [np.zeros(lead, np.float32)]
    pos = lead
    onset = end = None
    calm_speech = 0.0
    calm_until = None
    calm_clips: list[np.ndarray] = []  # the customer's calm voice, the babble's reference
    customer_gain = 10 ** (cond.gain_db / 20)
    staff_gain = customer_gain
    if cond.mode == "headset" and staff_pool:
        staff_gain *= _gain_to(HEADSET_WEARER_DBFS, [cache[i] for i in staff_pool])
        calm = [cache[i] for k, i in enumerate(spec.clips) if not _in_span(spec, k)]
        customer_gain *= _gain_to(
            HEADSET_WEARER_DBFS - HEADSET_CUSTOMER_BELOW_DB, calm or [cache[i] for i in spec.clips]
        )
    for k, i in enumerate(spec.clips):
        x = cache[i] * np.float32(customer_gain)
        in_span = _in_span(spec, k)
        if spec.stress_span is not None and k == spec.stress_span[0]:
            onset = (pos + _speech_onset(cache[i]) * RATE) / RATE
            calm_until = onset
        if not in_span and (spec.stress_span is None or k < spec.stress_span[0]):
            calm_speech += _speech_seconds(cache[i])
        if not in_span:
            calm_clips.append(x)
        parts.append(x)
        pos += x.size
        if spec.stress_span is not None and k == spec.stress_span[1] - 1:
            end = pos / RATE
        if k < len(spec.clips) - 1:
            gap = int(rng.uniform(*cond.pause_s) * RATE)
            if cond.mode in ("counter", "headset") and staff_pool:
                s = cache[turns[int(rng.integers(len(turns)))]] * np.float32(staff_gain)
                g2 = int(rng.uniform(*cond.pause_s) * RATE)
                parts += [np.zeros(gap, np.float32), s, np.zeros(g2, np.float32)]
                pos += gap + s.size + g2
            else:
                parts.append(np.zeros(gap, np.float32))
                pos += gap
    parts.append(np.zeros(int(10.0 * RATE), np.float32))  # the conversation ends in silence
    speech = np.concatenate(parts)
    if cond.babble_snr is not None and babble_pool:
        ref = augment._active_power(np.concatenate(calm_clips or [speech]))
        speech = speech + _babble(speech.size, ref, cond.babble_snr, cache, babble_pool, rng)
    mix = speech + _floor(cond, speech.size, rng)
    from models.dataset import to_pcm

    enrol = None
    if cond.mode == "counter" and staff_pool:
        # The staff member alone at shift start: twelve calm clips, in the same room (a quiet
        # voice needs that many for the 5 s of voiced speech enrolment asks for).
        e = np.concatenate(
            [cache[staff_pool[j % len(staff_pool)]] * np.float32(staff_gain) for j in range(12)]
        )
        enrol = to_pcm(e + _floor(cond, e.size, rng))
    return Audio(
        to_pcm(mix),
        onset,
        end,
        calm_speech,
        calm_until if calm_until is not None else pos / RATE,
        enrol,
    )


def staff_clips(
    cond: Condition, by: dict[str, dict[str, list[int]]], staff: str
) -> tuple[list[int], list[int]]:
    """The staff actor's calm clips (their level, counter mode's enrolment) and the clips their
    turns are drawn from under `cond` (WEARER_POOLS[cond.wearer])."""
    calm = [i for lab in POOLS["calm"] for i in by[staff].get(lab, [])]
    turns = [i for lab in WEARER_POOLS[cond.wearer] for i in by[staff].get(lab, [])]
    return calm, turns


def _in_span(spec: Spec, k: int) -> bool:
    return spec.stress_span is not None and spec.stress_span[0] <= k < spec.stress_span[1]


def _gain_to(dbfs: float, clips: Sequence[np.ndarray]) -> float:
    """The gain that puts these clips' speech level at dbfs, measured as the front end measures
    a window's level_db (the mean of the speech frames' dB): here the louder half of 20 ms frames."""
    x = np.concatenate(clips).astype(np.float64)
    frame = RATE // 50
    k = x.size // frame
    db = 10 * np.log10(np.mean(x[: k * frame].reshape(k, frame) ** 2, axis=1) + 1e-12)
    now = float(np.mean(np.sort(db)[k // 2 :]))
    return float(10 ** ((dbfs - now) / 20))


def _speech_seconds(x: np.ndarray) -> float:
    return max(0.0, x.size / RATE - _speech_onset(x) - _speech_onset(x[::-1].copy()))


def _babble(
    n: int,
    ref_power: float,
    snr_db: float,
    cache: ClipCache,
    pool: Sequence[int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Four other speakers talking at once in the background, `snr_db` below `ref_power`: the
    customer's calm voice. The room's chatter does not get louder when the customer shouts, so
    the reference is not the whole conversation (whose loudest turns would put the calm turns
    at about 0 dB SNR)."""
    out = np.zeros(n, np.float32)
    for _ in range(4):
        track: list[np.ndarray] = []
        got = 0
        while got < n:
            x = cache[pool[int(rng.integers(len(pool)))]]
            track.append(x)
            got += x.size
        out += np.concatenate(track)[:n]
    p_bab = float(np.mean(out.astype(np.float64) ** 2) + 1e-12)
    return (out * np.float32(math.sqrt(ref_power / p_bab / 10 ** (snr_db / 10)))).astype(np.float32)


# ---- the device pipeline --------------------------------------------------------------------------


def policy_settings(cond: Condition, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped cue-policy defaults for the attribution mode of `cond`."""
    s = dict(base or {})
    if cond.mode == "none":
        s.update(attribution="none", stress_from_unknown=True)
    else:
        s["attribution"] = cond.mode
    return s


def run_numpy(audio: Audio, score: Callable[[np.ndarray], float], settings: dict) -> dict:
    """The Pi agent's path: models.features (streaming, 0.25 s chunks) -> score -> attribution
    -> firmware.core.policy, exactly as firmware/pi/agent.py wires them. Returns the cue decisions
    [(t, cue)] and how many conversations the policy opened."""
    import os

    from firmware.core.policy import Policy

    fx, attrib = _front_end(audio, settings)
    policy = Policy(settings, rand_bytes=os.urandom)
    cues: list[tuple[float, str]] = []
    starts = 0
    t = 0.0
    for r in _records(fx, audio.pcm):
        t = r.t
        s = score(r.features)
        who = attrib.process(r.speech, r.level_db, r.f0_hz)
        for d in policy.step(r.t, s, who, r.rate, r.level_db, r.speech):
            if d["type"] == "cue":
                cues.append((round(d["t"], 3), d["cue"]))
            elif d.get("phase") == "start":
                starts += 1
                fx.new_conversation()
    policy.finish(t)
    return {"cues": cues, "conversations": starts}


def _front_end(audio: Audio, settings: dict) -> tuple[Any, Any]:
    """A fresh streaming front end and attribution, enrolled on `audio.enrol` where the mode
    enrols (counter: the staff member alone at shift start), as the Pi agent starts them."""
    from firmware.core.attribution_modes import make_attribution
    from models.features import FeatureExtractor

    attrib = make_attribution(settings)
    fx = FeatureExtractor()
    if audio.enrol is not None and hasattr(attrib, "enrol"):
        for r in _records(fx, audio.enrol):
            attrib.enrol(r.speech, r.level_db, r.f0_hz)
        attrib.finish_enrolment()
        fx.reset()
    return fx, attrib


def _records(fx: Any, pcm: np.ndarray, chunk: int = 4000) -> Iterable[Any]:
    for k in range(0, pcm.size, chunk):
        yield from fx.process(pcm[k : k + chunk])


_MPY_RUNNER = REPO / "firmware" / "host" / "conversation_stdin.py"


def run_micropython(
    audios: Sequence[Audio], ccm: bytes, settings: dict, workdir: Path
) -> list[dict]:
    """The same conversations through the headset's code on the MicroPython unix port:
    firmware/core/features.py -> firmware/core/nnrt.py -> firmware/core/attribution.py -> firmware/core/policy.py.
    Audio is streamed over stdin; only the model file and the settings are written."""
    import subprocess

    from calmcue.shared import mpy

    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model.ccm"
    model.write_bytes(ccm)
    search = [str(REPO)]
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {p!r})\n" for p in reversed(search))
    prelude += f"sys.argv[1:] = {[str(model), json.dumps(settings)]!r}\n"
    code = prelude + _MPY_RUNNER.read_text()
    stream: list[bytes] = []
    for a in audios:
        if a.enrol is not None:
            stream += [b"ENR0", struct.pack("<I", a.enrol.size), a.enrol.astype("<i2").tobytes()]
        stream += [b"PCM0", struct.pack("<I", a.pcm.size), a.pcm.astype("<i2").tobytes()]
    stream.append(b"PCM0" + struct.pack("<I", 0))
    proc = subprocess.run(
        [*mpy.interpreter(), "-X", "heapsize=512K", "-c", code],
        input=b"".join(stream),
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            "MicroPython conversation runner failed:\n"
            + proc.stdout.decode(errors="replace")[-2000:]
            + proc.stderr.decode(errors="replace")[-2000:]
        )
    out: list[dict] = [{"cues": [], "conversations": 0} for _ in audios]
    for line in proc.stdout.decode().splitlines():
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        r = out[d["id"]]
        if "cue" in d:
            r["cues"].append((round(d["t"], 3), d["cue"]))
        elif d.get("phase") == "start":
            r["conversations"] += 1
    return out


# ---- figures --------------------------------------------------------------------------------------


def summarise(results: Sequence[Result]) -> dict[str, Any]:
    """The figures of one condition (issue targets in docs/model.md)."""

    def stress_cues(r: Result, until: float | None = None) -> list[tuple[float, str]]:
        return [c for c in r.cues if c[1] in STRESS_CUES and (until is None or c[0] < until)]

    calm = [r for r in results if r.spec.kind == "calm"]
    out: dict[str, Any] = {"conversations": len(results)}
    if calm:
        out["calm_cued"] = _frac([bool(stress_cues(r)) for r in calm])
    # False stress cues per hour of calm customer speech: every calm conversation, and the calm
    # opening of the others (cues before the middle stretch starts).
    n_false = 0
    calm_s = 0.0
    for r in results:
        n_false += len(stress_cues(r, r.calm_until_s if r.spec.kind != "calm" else None))
        calm_s += r.calm_speech_s
    out["false_cues_per_hour"] = round(n_false / (calm_s / 3600), 2) if calm_s else None
    out["calm_speech_h"] = round(calm_s / 3600, 3)
    for kind in STRESS_KINDS:
        rs = [r for r in results if r.spec.kind == kind]
        if not rs:
            continue
        lat = []
        settled = []
        for r in rs:
            assert r.onset_s is not None and r.stretch_end_s is not None
            hit = [c for c in stress_cues(r) if r.onset_s <= c[0] <= r.stretch_end_s + 1.0]
            if hit:
                lat.append(hit[0][0] - r.onset_s)
            if stress_cues(r):
                settled.append(any(c[1] == "settled" and c[0] > r.stretch_end_s for c in r.cues))
        out[kind] = {
            "cued": round(len(lat) / len(rs), 3),
            "latency_median_s": round(float(np.median(lat)), 2) if lat else None,
            "latency_p90_s": round(float(np.percentile(lat, 90)), 2) if lat else None,
            "settled": _frac(settled) if settled else None,
        }
    for kind in ("happy", "sad"):
        rs = [r for r in results if r.spec.kind == kind]
        if rs:
            out[f"{kind}_cued"] = _frac([bool(stress_cues(r)) for r in rs])
    out["split_conversations"] = sum(1 for r in results if r.conversations != 1)
    return out


def _frac(xs: Sequence[bool]) -> float:
    return round(sum(xs) / len(xs), 3) if xs else 0.0


TARGETS = {
    "calm_cued": ("<=", 0.05),
    "false_cues_per_hour": ("<=", 3.0),
    "escalation_cued": (">=", 0.95),
    "latency_median_s": ("<=", 3.0),
    "latency_p90_s": ("<=", 6.0),
    "happy_cued": ("<=", 0.25),
    "settled": (">=", 0.90),
}


def misses(row: dict[str, Any]) -> list[str]:
    """The targets one condition's figures miss, in words."""
    out = []

    def check(name: str, value: float | None, label: str) -> None:
        if value is None:
            return
        op, target = TARGETS[name]
        ok = value <= target if op == "<=" else value >= target
        if not ok:
            out.append(f"{label} {value} (target {op} {target})")

    check("calm_cued", row.get("calm_cued"), "calm conversations cued")
    check("false_cues_per_hour", row.get("false_cues_per_hour"), "false cues/h")
    for kind in STRESS_KINDS:
        k = row.get(kind)
        if not k:
            continue
        check("escalation_cued", k["cued"], f"{kind} cued")
        check("latency_median_s", k["latency_median_s"], f"{kind} median latency")
        check("latency_p90_s", k["latency_p90_s"], f"{kind} p90 latency")
        check("settled", k["settled"], f"{kind} settled")
    check("happy_cued", row.get("happy_cued"), "happy cued")
    return out


# ---- the benchmark --------------------------------------------------------------------------------


@dataclass
class HeldOutModels:
    """For each speaker, the fold network trained without them, and the shipped threshold."""

    by_speaker: dict[str, Any]  # speaker -> models.export.Network
    threshold: float | None

    @classmethod
    def from_trained(cls, trained: Any) -> HeldOutModels:
        by: dict[str, Any] = {}
        for net, held in zip(trained.fold_nets, trained.folds, strict=True):
            for i in held:
                by[trained.clips[int(i)].speaker] = net
        return cls(by, getattr(trained, "threshold", None))

    @classmethod
    def shipped(cls, path: Path = REPO / "models" / "stress_folds.npz") -> HeldOutModels:
        """The fold networks `calmcue model export` ships beside the model."""
        from models.export import Network

        if not path.exists():
            raise FileNotFoundError(
                f"{path} not found; run 'calmcue model train' and 'calmcue model export'"
            )
        z = np.load(path)
        meta = json.loads(bytes(z["meta"]).decode())
        by: dict[str, Any] = {}
        for k, speakers in enumerate(meta["speakers"]):
            net = Network(
                z[f"f{k}_mean"],
                z[f"f{k}_scale"],
                [z[f"f{k}_w{i}"] for i in range(meta["depth"])],
                [z[f"f{k}_b{i}"] for i in range(meta["depth"])],
                meta["activation"],
            )
            for spk in speakers:
                by[spk] = net
        return cls(by, None)


class _OnnxScore:
    """One onnxruntime session per fold network, built once (as the Pi agent's scorer)."""

    def __init__(self, net: Any):
        import onnxruntime as ort

        from models.export import to_onnx

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._s = ort.InferenceSession(
            to_onnx(net).SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self._in = self._s.get_inputs()[0].name

    def __call__(self, features: np.ndarray) -> float:
        x = np.asarray(features, np.float32).reshape(1, -1)
        return min(1.0, max(0.0, float(self._s.run(None, {self._in: x})[0].reshape(-1)[0])))


def shipped_settings(models: HeldOutModels, cond: Condition) -> dict[str, Any]:
    """Default settings as the device runs them for this attribution mode."""
    return policy_settings(cond)


# ---- front-end records (model variants replayed in seconds) --------------------------------------


@dataclass
class Recorded:
    """What the front end and attribution make of one rendered conversation, window by window.
    None of it depends on the model: the front end's baseline restarts at each conversation
    start, and the record's policy opens conversations on the speech gate and the pauses alone
    (firmware/core/policy.py step, no scores). One exception: after a stress cue the policy
    keeps a conversation going through a voice too faint to judge, where the record's policy,
    which gives no cue, split it and restarted the baseline. A replay differs from the
    benchmark's own run only after such a split (at the shipped defaults, 2026-12-07: one
    figure in each of three rows, by one conversation; docs/model.md)."""

    audio: Audio  # pcm dropped (the records hold what the rest of the pipeline reads)
    features: np.ndarray  # (n, F) float32
    rows: list[tuple[float, str, float, float, float]]  # t, speaker, rate, level_db, speech


def record(audio: Audio, settings: dict) -> Recorded:
    """The Pi agent's path of run_numpy up to the model: streaming features and attribution,
    with the front end's baseline restarted where the policy opens a conversation."""
    import os

    from firmware.core.policy import Policy

    fx, attrib = _front_end(audio, settings)
    policy = Policy(settings, rand_bytes=os.urandom)
    feats: list[np.ndarray] = []
    rows: list[tuple[float, str, float, float, float]] = []
    for r in _records(fx, audio.pcm):
        who = attrib.process(r.speech, r.level_db, r.f0_hz)
        feats.append(np.asarray(r.features, np.float32))
        rows.append((r.t, who, r.rate, r.level_db, r.speech))
        for d in policy.step(r.t, None, who, r.rate, r.level_db, r.speech):
            if d.get("phase") == "start":
                fx.new_conversation()
    kept = Audio(
        np.zeros(0, np.int16),
        audio.onset_s,
        audio.stretch_end_s,
        audio.calm_speech_s,
        audio.calm_until_s,
    )
    n_feat = feats[0].size if feats else 0
    return Recorded(kept, np.array(feats, np.float32).reshape(-1, n_feat), rows)


def replay(rec: Recorded, score: Callable[[np.ndarray], float], settings: dict) -> dict:
    """run_numpy's cue decisions from a record: the model and the policy only."""
    import os

    from firmware.core.policy import Policy

    policy = Policy(settings, rand_bytes=os.urandom)
    cues: list[tuple[float, str]] = []
    starts = 0
    t = 0.0
    for x, (t, who, rate, level_db, speech) in zip(rec.features, rec.rows, strict=True):
        for d in policy.step(t, score(x), who, rate, level_db, speech):
            if d["type"] == "cue":
                cues.append((round(d["t"], 3), d["cue"]))
            elif d.get("phase") == "start":
                starts += 1
    policy.finish(t)
    return {"cues": cues, "conversations": starts}


# Sources whose change makes saved records stale.
_RECORD_SOURCES = (
    "models/features.py",
    "models/conversations.py",
    "models/augment.py",
    "firmware/core/policy.py",
    "firmware/core/cue_settings.py",
    "firmware/core/attribution.py",
    "firmware/core/attribution_modes.py",
)
# Settings the records depend on: the speech gate, the hop and the conversation gap decide where
# the front end restarts its per-conversation baseline, the attribution settings who is talking.
# They cannot be changed in a replay; every other cue setting can (`overrides`).
RECORDED_SETTINGS = (
    "hop_s",
    "min_speech",
    "conversation_gap_s",
    "attribution",
    "headset_wearer_db",
    "near_field_db",
    "pitch_tol_st",
    "level_tol_db",
    "enrol_min_s",
)


def records_path(folder: Path, cond: Condition, specs: Sequence[Spec]) -> Path:
    """Where the records of `specs` under `cond` are kept: keyed by the conversations and by
    the sources that make them."""
    import hashlib

    h = hashlib.sha256()
    for src in _RECORD_SOURCES:
        h.update((REPO / src).read_bytes())
    h.update(repr([(s.kind, s.speaker, s.clips, s.staff, s.seed) for s in specs]).encode())
    return folder / f"{cond.name}-{h.hexdigest()[:16]}.pkl"


def run_condition(
    cond: Condition,
    specs: Sequence[Spec],
    clips: Sequence[Clip],
    models: HeldOutModels,
    cache: ClipCache,
    engine: str = "onnxruntime",
    workdir: Path | None = None,
    records: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Result]:
    """Every conversation of `specs` under `cond` through one engine. With `records` (a
    folder, onnxruntime only), the front end's records are saved there on the first run and
    replayed through the model and policy on the next ones: the same cues in seconds.
    `overrides`: cue settings on top of the shipped defaults; with records, those that change
    the records (RECORDED_SETTINGS) are refused."""
    import pickle

    base = shipped_settings(models, cond)
    settings = policy_settings(cond, overrides)
    scorers: dict[int, _OnnxScore] = {}

    def scorer(spec: Spec) -> _OnnxScore:
        net = models.by_speaker[spec.speaker]
        sc = scorers.get(id(net))
        if sc is None:
            sc = scorers[id(net)] = _OnnxScore(net)
        return sc

    path = records_path(records, cond, specs) if records and engine == "onnxruntime" else None
    fixed = sorted(k for k in (overrides or {}) if k in RECORDED_SETTINGS)
    if path is not None and fixed:
        raise ValueError(f"{', '.join(fixed)} change what was recorded; run the benchmark instead")
    if path is not None and path.exists():
        recs: list[Recorded] = pickle.loads(path.read_bytes())
        outs = []
        for spec, rec in zip(specs, recs, strict=True):
            outs.append(replay(rec, scorer(spec), settings))
        return _results(cond, specs, [r.audio for r in recs], outs)
    by = _by_speaker(clips)
    rendered = []
    for spec in specs:
        babble = [
            i for s, labs in by.items() if s != spec.speaker for v in labs.values() for i in v
        ]
        staff, turns = staff_clips(cond, by, spec.staff)
        rendered.append(render(spec, cond, cache, babble[::7], staff, turns))
    if path is not None:
        recs = [record(a, base) for a in rendered]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(recs))
        return run_condition(cond, specs, clips, models, cache, engine, workdir, records, overrides)
    if engine == "onnxruntime":
        outs = []
        for spec, audio in zip(specs, rendered, strict=True):
            outs.append(run_numpy(audio, scorer(spec), settings))
    elif engine == "micropython":
        from models.export import to_compact, to_onnx

        outs = [{}] * len(specs)
        nets = {id(n): n for n in models.by_speaker.values()}
        for net in nets.values():
            idx = [k for k, s in enumerate(specs) if models.by_speaker[s.speaker] is net]
            if not idx:
                continue
            got = run_micropython(
                [rendered[k] for k in idx],
                to_compact(to_onnx(net)),
                settings,
                workdir or REPO / "var" / "conversations",
            )
            for k, o in zip(idx, got, strict=True):
                outs[k] = o
    else:
        raise ValueError(f"unknown engine {engine!r}; choose onnxruntime or micropython")
    return _results(cond, specs, rendered, outs)


def _results(
    cond: Condition, specs: Sequence[Spec], rendered: Sequence[Audio], outs: Sequence[dict]
) -> list[Result]:
    return [
        Result(
            spec,
            cond.name,
            o["cues"],
            a.onset_s,
            a.stretch_end_s,
            a.calm_speech_s,
            a.calm_until_s,
            o["conversations"],
        )
        for spec, a, o in zip(specs, rendered, outs, strict=True)
    ]


def compare_timelines(a: Sequence[Result], b: Sequence[Result], hop: float = 0.25) -> list[str]:
    """Differences between two engines' cue timelines: the same cues in the same order, each
    within one hop. Empty when they agree."""
    out = []
    for ra, rb in zip(a, b, strict=True):
        ca, cb = ra.cues, rb.cues
        same = len(ca) == len(cb) and all(
            x[1] == y[1] and abs(x[0] - y[0]) <= hop + 1e-6 for x, y in zip(ca, cb, strict=True)
        )
        if not same:
            out.append(f"{ra.spec.kind}/{ra.spec.speaker}/{ra.spec.seed}: {ca} vs {cb}")
    return out


def run_benchmark(
    trained: Any,  # a models.pipeline.Trained, or HeldOutModels
    conditions: Sequence[str] = tuple(CONDITIONS),
    per_speaker: int = 3,
    seed: int = 0,
    engines: Sequence[str] = ("onnxruntime",),
    parity_slice: int | None = None,
    speakers: Sequence[str] | None = None,
    progress: Callable[[str], None] = log.info,
    records: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Figures per condition on speakers the models never saw. With two engines, the second
    replays `parity_slice` conversations per condition (all when None) and the timelines are
    compared. `records`: a folder for the front end's records, `overrides`: cue settings on
    top of the shipped defaults (run_condition)."""
    import time

    from models.corpora import load_ravdess
    from models.pipeline import RAVDESS

    clips = load_ravdess(RAVDESS)
    models = trained if isinstance(trained, HeldOutModels) else HeldOutModels.from_trained(trained)
    if speakers is not None:
        keep = set(speakers)
    else:
        keep = set(models.by_speaker)
    specs = [s for s in build_specs(clips, per_speaker, seed) if s.speaker in keep]
    cache = ClipCache(clips)
    report: dict[str, Any] = {"per_speaker": per_speaker, "seed": seed, "conditions": {}}
    for name in conditions:
        cond = CONDITIONS[name]
        t0 = time.monotonic()
        results = run_condition(
            cond, specs, clips, models, cache, engines[0], records=records, overrides=overrides
        )
        row = summarise(results)
        row["misses"] = misses(row)
        if len(engines) > 1:
            sl = specs if parity_slice is None else _slice(specs, parity_slice)
            first = [r for r in results if r.spec in set(sl)]
            other = run_condition(cond, sl, clips, models, cache, engines[1], overrides=overrides)
            diffs = compare_timelines(first, other)
            row["parity"] = {"engines": list(engines), "compared": len(sl), "differ": len(diffs)}
            if diffs:
                row["parity"]["examples"] = diffs[:3]
        report["conditions"][name] = row
        progress(f"{name}: {_line(row)} ({time.monotonic() - t0:.0f} s)")
    return report


def _slice(specs: Sequence[Spec], n: int) -> list[Spec]:
    # n conversations of each kind, spread over speakers.
    out: list[Spec] = []
    for kind in KINDS:
        ks = [s for s in specs if s.kind == kind]
        step = max(1, len(ks) // max(1, n))
        out += ks[::step][:n]
    return out


def _line(row: dict[str, Any]) -> str:
    parts = [f"calm cued {row.get('calm_cued')}", f"false/h {row.get('false_cues_per_hour')}"]
    for kind in STRESS_KINDS:
        k = row.get(kind)
        if k:
            parts.append(
                f"{kind} {k['cued']} ({k['latency_median_s']}/{k['latency_p90_s']} s, "
                f"settled {k['settled']})"
            )
    parts.append(f"happy {row.get('happy_cued')}")
    parts.append(f"sad {row.get('sad_cued')}")
    if "parity" in row:
        p = row["parity"]
        parts.append(f"parity {p['compared'] - p['differ']}/{p['compared']}")
    return ", ".join(parts)


REPORT = REPO / "var" / "model" / "conversations.json"
CARD = REPO / "models" / "MODEL_CARD.md"


def save_report(report: dict[str, Any], path: Path = REPORT, card: Path | None = CARD) -> None:
    """var/model/conversations.json, and the conversation table of the model card. A run of
    some conditions (`--condition`) with the same conversations (per_speaker, seed) updates
    those rows of the saved report and keeps the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if (
            isinstance(old, dict)
            and old.get("per_speaker") == report["per_speaker"]
            and old.get("seed") == report["seed"]
        ):
            rows = {**old.get("conditions", {}), **report["conditions"]}
            order = [c for c in CONDITIONS if c in rows]
            report = {**report, "conditions": {c: rows[c] for c in order}}
    path.write_text(json.dumps(report, indent=1))
    if card is not None and card.exists():
        text = card.read_text()
        start, end = "<!-- conversations:start", "<!-- conversations:end -->"
        if start in text and end in text:
            a = text.index(start)
            b = text.index(end) + len(end)
            card.write_text(text[:a] + render_table(report) + text[b:])


def render_table(report: dict[str, Any]) -> str:
    """The model card's conversation table (markdown) from a benchmark report."""
    lines = [
        "<!-- conversations:start (written by `calmcue model evaluate --conversations`) -->",
        "",
        f"Conversations per condition: {report['per_speaker']} of each kind per speaker, seed "
        f"{report['seed']}, every speaker scored by the fold model that never heard them; "
        "shipped policy defaults. Escalation columns: share cued during the stretch, median / "
        "90th percentile seconds from its onset, share with `settled` after the calm return.",
        "",
        "| condition | calm cued | false cues / h | angry | fearful | happy cued | sad cued "
        "| parity | misses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["conditions"].items():
        esc = []
        for kind in STRESS_KINDS:
            k = r.get(kind) or {}
            esc.append(
                f"{k.get('cued')} ({k.get('latency_median_s')}/{k.get('latency_p90_s')} s, "
                f"settled {k.get('settled')})"
            )
        par = r.get("parity")
        par_s = f"{par['compared'] - par['differ']}/{par['compared']}" if par else "-"
        lines.append(
            f"| {name} | {r.get('calm_cued')} | {r.get('false_cues_per_hour')} | {esc[0]} | "
            f"{esc[1]} | {r.get('happy_cued')} | {r.get('sad_cued')} | {par_s} | "
            f"{len(r['misses'])} |"
        )
    lines += ["", "<!-- conversations:end -->"]
    return "\n".join(lines)
