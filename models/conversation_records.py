"""Policy settings tried on the conversation benchmark in seconds, not in half an hour.

The benchmark's cost is the front end and the model (models/conversations.py runs every
conversation's audio through them); the cue policy is a few microseconds a window. So each
condition's per-window records (window end, stress score, who is talking, rate, level, speech
fraction) are recorded once per model, then replayed through `firmware.core.policy` with any cue
settings: an operating point is chosen from false cues per hour of calm speech across every
condition row at once, the way wake-word engines choose theirs from false accepts per hour.

    python -m models.conversation_records --per-speaker 2 --set intense_after_s=1.5

records the conditions that have no records yet (var/conversations/records/, one file per
model, condition, per_speaker and seed; the first run costs what the benchmark costs), then
prints each row, the false cues per hour pooled over all rows, and the worst row of each
target. Replayed at the shipped defaults it gives exactly the benchmark's onnxruntime rows
(tests/test_conversation_records.py).

Settings that change what the records are cannot be replayed: the speech gate, the hop and
the conversation gap decide where the front end restarts its per-conversation baseline, and the
attribution settings decide who is talking; they need a new benchmark run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import conversations as cv

RECORDS = cv.REPO / "var" / "conversations" / "records"
SPEAKERS = ("staff", "customer", "unknown")
# Settings the records depend on (see the module comment).
FIXED = (
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


def model_tag(models: cv.HeldOutModels) -> str:
    """A short hash of the fold networks' weights: records belong to one model."""
    h = hashlib.sha256()
    seen = set()
    for spk in sorted(models.by_speaker):
        net = models.by_speaker[spk]
        if id(net) in seen:
            continue
        seen.add(id(net))
        for a in (net.mean, net.scale, *net.weights, *net.biases):
            h.update(np.ascontiguousarray(a, np.float64).tobytes())
    return h.hexdigest()[:12]


def record(
    cond: cv.Condition,
    specs: Sequence[cv.Spec],
    clips: Sequence[Any],
    models: cv.HeldOutModels,
    cache: cv.ClipCache,
) -> dict[str, Any]:
    """Every conversation of `specs` under `cond` through the front end, the held-out model and
    the attribution (as models.conversations.run_numpy), keeping each window's record."""
    from firmware.core.attribution_modes import make_attribution
    from firmware.core.policy import Policy
    from models.features import FeatureExtractor

    by = cv._by_speaker(clips)
    settings = cv.policy_settings(cond)
    scorers: dict[int, Any] = {}
    convs = []
    for spec in specs:
        babble = [
            i for s, labs in by.items() if s != spec.speaker for v in labs.values() for i in v
        ]
        staff = [i for lab in cv.POOLS["calm"] for i in by[spec.staff].get(lab, [])]
        audio = cv.render(spec, cond, cache, babble[::7], staff)
        net = models.by_speaker[spec.speaker]
        score = scorers.get(id(net))
        if score is None:
            score = scorers[id(net)] = cv._OnnxScore(net)
        attrib = make_attribution(settings)
        fx = FeatureExtractor()
        if audio.enrol is not None and hasattr(attrib, "enrol"):
            for r in cv._records(fx, audio.enrol):
                attrib.enrol(r.speech, r.level_db, r.f0_hz)
            attrib.finish_enrolment()
            fx.reset()
        # The shipped policy runs alongside only to restart the front end's baseline where a
        # conversation starts, as the device does; its cues are not kept.
        policy = Policy(settings, rand_bytes=os.urandom)
        rows = []
        for r in cv._records(fx, audio.pcm):
            s = score(r.features)
            who = attrib.process(r.speech, r.level_db, r.f0_hz)
            rows.append((r.t, s, SPEAKERS.index(who), r.rate, r.level_db, r.speech))
            for d in policy.step(r.t, s, who, r.rate, r.level_db, r.speech):
                if d.get("phase") == "start":
                    fx.new_conversation()
        convs.append(
            {
                "kind": spec.kind,
                "speaker": spec.speaker,
                "seed": spec.seed,
                "onset_s": audio.onset_s,
                "stretch_end_s": audio.stretch_end_s,
                "calm_speech_s": audio.calm_speech_s,
                "calm_until_s": audio.calm_until_s,
                "windows": np.asarray(rows, np.float64).reshape(-1, 6),
            }
        )
    return {"condition": cond.name, "conversations": convs}


def save(rec: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    convs = rec["conversations"]
    meta = [{k: v for k, v in c.items() if k != "windows"} for c in convs]
    np.savez_compressed(
        path,
        meta=np.frombuffer(
            json.dumps({"condition": rec["condition"], "conversations": meta}).encode(), np.uint8
        ),
        windows=np.concatenate([c["windows"] for c in convs]) if convs else np.zeros((0, 6)),
        counts=np.array([len(c["windows"]) for c in convs], np.int64),
    )


def load(path: Path) -> dict[str, Any]:
    z = np.load(path)
    meta = json.loads(bytes(z["meta"]).decode())
    ends = np.cumsum(z["counts"])
    for c, a, b in zip(meta["conversations"], ends - z["counts"], ends, strict=True):
        c["windows"] = z["windows"][a:b]
    return meta


def replay(rec: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The benchmark row of one condition's records under the policy with `overrides` on top
    of the shipped defaults."""
    row = cv.summarise(replay_results(rec, overrides))
    row["misses"] = cv.misses(row)
    return row


def replay_results(rec: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[cv.Result]:
    """Each recorded conversation's cues under the policy with `overrides`."""
    import types

    from firmware.core.policy import Policy

    over = dict(overrides or {})
    fixed = sorted(k for k in over if k in FIXED)
    if fixed:
        raise ValueError(f"{', '.join(fixed)} change what was recorded; run the benchmark instead")
    settings = cv.policy_settings(cv.CONDITIONS[rec["condition"]], over)
    results = []
    for c in rec["conversations"]:
        policy = Policy(settings, rand_bytes=os.urandom)
        cues: list[tuple[float, str]] = []
        starts = 0
        t = 0.0
        for w in c["windows"].tolist():
            t = w[0]
            for d in policy.step(t, w[1], SPEAKERS[int(w[2])], w[3], w[4], w[5]):
                if d["type"] == "cue":
                    cues.append((round(d["t"], 3), d["cue"]))
                elif d.get("phase") == "start":
                    starts += 1
        policy.finish(t)
        spec = types.SimpleNamespace(kind=c["kind"], speaker=c["speaker"], seed=c["seed"])
        results.append(
            cv.Result(
                spec,  # type: ignore[arg-type]  # summarise reads only its kind
                rec["condition"],
                cues,
                c["onset_s"],
                c["stretch_end_s"],
                c["calm_speech_s"],
                c["calm_until_s"],
                starts,
            )
        )
    return results


def pooled(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """False cues per hour pooled over every row's calm speech, and each target's worst row."""
    hours = sum(r["calm_speech_h"] for r in rows.values())
    false = sum((r["false_cues_per_hour"] or 0) * r["calm_speech_h"] for r in rows.values())
    angry = {n: r["angry"] for n, r in rows.items() if r.get("angry")}

    def worst(values: dict[str, Any], high: bool) -> tuple[str, Any] | None:
        vals = {k: v for k, v in values.items() if v is not None}
        if not vals:
            return None
        k = max(vals, key=lambda n: vals[n]) if high else min(vals, key=lambda n: vals[n])
        return k, vals[k]

    return {
        "false_cues_per_hour": round(false / hours, 2) if hours else None,
        "worst_calm_cued": worst({n: r.get("calm_cued") for n, r in rows.items()}, True),
        "worst_angry_cued": worst({n: a["cued"] for n, a in angry.items()}, False),
        "worst_angry_p90_s": worst({n: a["latency_p90_s"] for n, a in angry.items()}, True),
        "worst_happy_cued": worst({n: r.get("happy_cued") for n, r in rows.items()}, True),
        "worst_settled": worst({n: a["settled"] for n, a in angry.items()}, False),
    }


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.conversation_records",
        description="Replay recorded benchmark conversations through the cue policy with other "
        "settings (records are made on first use, per model)",
    )
    p.add_argument("--per-speaker", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--condition", action="append", help="only this condition (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a cue setting")
    args = p.parse_args(argv)
    over: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: write KEY=VALUE")
        over[key.strip()] = _value(value.strip())
    names = args.condition or list(cv.CONDITIONS)
    unknown = [n for n in names if n not in cv.CONDITIONS]
    if unknown:
        p.error(f"unknown condition {unknown[0]!r}; choose from {', '.join(cv.CONDITIONS)}")
    models = cv.HeldOutModels.shipped()
    tag = model_tag(models)
    ctx: tuple[Any, ...] | None = None
    rows = {}
    for name in names:
        path = RECORDS / f"{tag}-{name}-p{args.per_speaker}-s{args.seed}.npz"
        if not path.exists():
            if ctx is None:
                from models.corpora import load_ravdess
                from models.pipeline import RAVDESS

                clips = load_ravdess(RAVDESS)
                specs = [
                    s
                    for s in cv.build_specs(clips, args.per_speaker, args.seed)
                    if s.speaker in models.by_speaker
                ]
                ctx = (specs, clips, cv.ClipCache(clips))
            print(f"   recording {name} ...", flush=True)
            save(record(cv.CONDITIONS[name], ctx[0], ctx[1], models, ctx[2]), path)
        rows[name] = replay(load(path), over)
        print(f"{name}: {cv._line(rows[name])}", flush=True)
    print(json.dumps(pooled(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
