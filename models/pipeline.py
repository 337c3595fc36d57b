"""`calmcue model train / evaluate / export` (and `make model`).

train     features of RAVDESS (or a manifest / corpus folder) under clean and degraded copies,
          speaker-grouped folds + leave-one-gender-out models, the shipped model on all speakers,
          and the threshold for the stated false-cue rate on held-out calm clips -> var/model/
evaluate  every figure on held-out speakers: clean, recording levels, noise, reverberation, with
          and without the conversation lead-in; happy/surprised cue rates -> var/model/metrics.json
export    models/stress.onnx (opset 13), models/stress.ccm (device form), models/stress.json
          (threshold, feature order, aggregation) and the metrics block of models/MODEL_CARD.md
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models import dataset, train
from models.corpora import Clip, CorpusError, load_ravdess, read_manifest, scan_corpus
from models.export import Network

log = logging.getLogger("calmcue.model")
REPO = Path(__file__).resolve().parent.parent
RAVDESS = REPO.parent / "shared" / "data" / "ravdess"
WORK = REPO / "var" / "model"
SHIPPED = REPO / "models"
MODEL_ID = "stress-mlp-v2"
TRAIN_CONDITIONS = ("clean", "train_aug1", "train_aug2", "train_aug3", "train_aug4")
TEST_CONDITIONS = (*dataset.LEVEL_CONDITIONS, *dataset.NOISE_CONDITIONS)
REPORT_LABELS = ("neutral", "calm", "angry", "fearful", "happy", "surprised", "sad")


def load_clips(source: str | None = None) -> list[Clip]:
    """RAVDESS by default; `manifest.csv` path; or `kind:folder` (ravdess, cremad, emodb, tess).

    Only the labels the model or the report uses are kept.
    """
    if source is None:
        clips = load_ravdess(RAVDESS)
    elif ":" in source and source.split(":", 1)[0] in ("ravdess", "cremad", "emodb", "tess"):
        kind, folder = source.split(":", 1)
        clips = scan_corpus(kind, folder)
    else:
        clips = read_manifest(source)
    return [c for c in clips if c.label in REPORT_LABELS]


@dataclass
class Trained:
    settings: train.TrainSettings
    clips: list[Clip]
    folds: list[np.ndarray]
    fold_nets: list[Network]
    gender_nets: dict[str, Network]  # held-out gender -> network trained on the other
    final: Network
    threshold: float
    oof_clean: np.ndarray  # clip scores of held-out speakers, clean, with lead-in
    features_version: str  # hash of models/features.py the tables were computed with


def _tables(
    clips: Sequence[Clip],
    conditions: Sequence[str],
    baseline: bool,
    seed: int,
    cache: Path | None = dataset.CACHE,
    folds: int = 6,
    babble: dataset.BabbleRecipe | None = None,
) -> dict:
    out = {}
    for cond in conditions:
        log.info("features: %s (%s lead-in)", cond, "with" if baseline else "without")
        out[cond] = dataset.build_table(
            clips,
            cond,
            baseline,
            seed,
            cache=cache,
            folds=folds,
            babble=babble or dataset.BabbleRecipe(),
        )
    return out


def _predict(net: Network, table: dataset.Table, clip_ids: np.ndarray, n: int, speech_min: float):
    sub = table.subset(clip_ids)
    return train.clip_scores(sub, net.predict(sub.features), n, speech_min)


def run_train(
    source: str | None = None,
    settings: train.TrainSettings | None = None,
    work: Path = WORK,
    cache: Path | None = dataset.CACHE,
) -> Trained:
    s = settings or train.TrainSettings()
    clips = load_clips(source)
    if len({c.speaker for c in clips}) < s.folds:
        raise CorpusError(f"need at least {s.folds} speakers for speaker-grouped folds")
    n = len(clips)
    babble = tuple(f"{dataset.BABBLE_PREFIX}{k + 1}" for k in range(s.babble_copies))
    tables = _tables(clips, TRAIN_CONDITIONS + babble, True, s.seed, cache, s.folds, s.babble)
    train_tables = list(tables.values())
    # The babble of a speaker's copies comes from their own fold's other speakers (never a
    # held-out one for the speaker folds); the gender folds hold out other speakers, so their
    # models train without babble copies.
    no_babble = [tables[c] for c in TRAIN_CONDITIONS]
    trained_on = tuple(lab for head in s.heads for lab in head)
    binary_ids = np.array(
        [i for i, c in enumerate(clips) if train.train_label(c, trained_on) is not None]
    )
    names = dataset.feature_names()
    folds = train.speaker_folds(clips, s.folds)
    fold_nets = []
    oof = np.full(n, np.nan)
    for f, held in enumerate(folds):
        fit_ids = np.setdiff1d(binary_ids, held)
        net = train.fit_heads(train_tables, clips, fit_ids, s, names)
        fold_nets.append(net)
        got = _predict(net, tables["clean"], held, n, s.speech_min)
        oof[held] = got[held]
        log.info(
            "fold %d: %d speakers held out, %d training clips",
            f,
            len({clips[i].speaker for i in held}),
            fit_ids.size,
        )
    gender_nets = {}
    for g in sorted({c.gender for c in clips} - {""}):
        fit_ids = np.array([i for i in binary_ids if clips[i].gender != g])
        gender_nets[g] = train.fit_heads(no_babble, clips, fit_ids, s, names)
    final = train.fit_heads(train_tables, clips, binary_ids, s, names)
    calm = np.array([c.stress == 0 for c in clips])
    threshold = train.threshold_for(oof[calm], s.false_cue_rate)
    trained = Trained(
        s, clips, folds, fold_nets, gender_nets, final, threshold, oof, dataset.feature_version()
    )
    work.mkdir(parents=True, exist_ok=True)
    (work / "trained.pkl").write_bytes(pickle.dumps(trained))
    yb, sb = train.binary(clips, oof)
    log.info(
        "held-out speakers (clean, with lead-in): AUC %.3f; threshold %.3f for %.0f%% false cues",
        train.auc(yb, sb),
        threshold,
        100 * s.false_cue_rate,
    )
    return trained


def load_trained(work: Path = WORK) -> Trained:
    path = work / "trained.pkl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run 'calmcue model train' first")
    t: Trained = pickle.loads(path.read_bytes())
    if t.features_version != dataset.feature_version():
        log.warning(
            "models/features.py changed since this model was trained; run 'calmcue model train'"
        )
    return t


def run_evaluate(
    trained: Trained | None = None,
    anchor: bool = False,
    work: Path = WORK,
    cache: Path | None = dataset.CACHE,
    conditions: Sequence[str] = TEST_CONDITIONS,
) -> dict:
    t = trained or load_trained(work)
    s = t.settings
    clips = t.clips
    n = len(clips)
    thr = t.threshold
    metrics: dict = {"threshold": round(thr, 4), "false_cue_target": s.false_cue_rate}
    groups = {"speaker_folds": list(zip(t.folds, t.fold_nets, strict=True))}
    groups["gender_out"] = [
        (np.array([i for i, c in enumerate(clips) if c.gender == g]), net)
        for g, net in t.gender_nets.items()
    ]
    for baseline in (True, False):
        tables = _tables(clips, conditions, baseline, s.seed + 1, cache)
        key = "with_lead_in" if baseline else "no_lead_in"
        for gname, pairs in groups.items():
            res = {}
            for cond, table in tables.items():
                scores = np.full(n, np.nan)
                for held, net in pairs:
                    scores[held] = _predict(net, table, held, n, s.speech_min)[held]
                res[cond] = train.summary(clips, scores, thr)
            metrics.setdefault(gname, {})[key] = res
    if anchor:
        from models import anchor as egemaps

        log.info("anchor: eGeMAPS + logistic regression on the same splits and copies")
        metrics["anchor_egemaps_lr"] = egemaps.evaluate(
            clips, t.folds, TEST_CONDITIONS, s.false_cue_rate, s.seed + 1
        )
    metrics["nested_threshold"] = _nested_threshold(t)
    metrics["n_clips"] = {lab: sum(c.label == lab for c in clips) for lab in REPORT_LABELS}
    metrics["n_speakers"] = len({c.speaker for c in clips})
    metrics["settings"] = asdict(s)
    work.mkdir(parents=True, exist_ok=True)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_metrics(metrics)
    return metrics


def _nested_threshold(t: Trained) -> dict:
    """Stricter check of the calibration: each fold judged at a threshold picked from the other
    folds' calm clips only (the shipped threshold uses all held-out calm clips)."""
    y = np.array([-1 if c.stress is None else c.stress for c in t.clips])
    pred = np.zeros(len(t.clips), bool)
    for held in t.folds:
        other = np.setdiff1d(np.arange(len(t.clips)), held)
        thr = train.threshold_for(t.oof_clean[other][y[other] == 0], t.settings.false_cue_rate)
        pred[held] = t.oof_clean[held] >= thr
    hit = float(np.mean(pred[y == 1]))
    false_cue = float(np.mean(pred[y == 0]))
    return {
        "balanced_accuracy": round((hit + 1 - false_cue) / 2, 4),
        "false_cue_rate": round(false_cue, 4),
        "stress_detected": round(hit, 4),
    }


def print_metrics(m: dict) -> None:
    print(f"threshold {m['threshold']} (target false-cue rate {m['false_cue_target']})")
    for gname in ("speaker_folds", "gender_out"):
        for key, res in m[gname].items():
            print(f"== {gname}, {key}")
            for cond, r in res.items():
                print("   " + f"{cond:13s} " + "  ".join(f"{k}={v:.3f}" for k, v in r.items()))


def save_folds(t: Trained, path: Path) -> None:
    """The speaker-grouped fold networks and which speakers each never heard: what the
    conversation benchmark (models/conversations.py) scores each speaker with. A few KB; shipped
    so the benchmark and its `make test` slice run without retraining."""
    arrays: dict[str, np.ndarray] = {}
    speakers = []
    for k, (net, held) in enumerate(zip(t.fold_nets, t.folds, strict=True)):
        arrays[f"f{k}_mean"] = net.mean.astype(np.float64)
        arrays[f"f{k}_scale"] = net.scale.astype(np.float64)
        for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
            arrays[f"f{k}_w{i}"] = np.asarray(w, np.float64)
            arrays[f"f{k}_b{i}"] = np.asarray(b, np.float64)
        speakers.append(sorted({t.clips[int(i)].speaker for i in held}))
    arrays["meta"] = np.frombuffer(
        json.dumps(
            {
                "speakers": speakers,
                "depth": len(t.fold_nets[0].weights),
                "activation": t.fold_nets[0].activation,
                "features_version": t.features_version,
            }
        ).encode(),
        np.uint8,
    )
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def run_export(trained: Trained | None = None, out_dir: Path = SHIPPED, work: Path = WORK) -> dict:
    from models.export import to_compact, to_onnx

    t = trained or load_trained(work)
    if any(len(set(n.layer_activations())) > 1 for n in (t.final, *t.fold_nets)):
        # A min-of-heads merge (TrainSettings.head_min) ends in a Relu after Tanh layers; the
        # ONNX and compact forms carry that, stress_folds.npz (and the conversation benchmark's
        # loader of it) one activation for every layer. Benchmark such a run with
        # `calmcue model evaluate --conversations --trained DIR` instead.
        raise ValueError("export of mixed hidden activations (head_min) is not supported yet")
    net = t.final
    names = dataset.feature_names()
    net = Network(
        net.mean,
        net.scale,
        net.weights,
        net.biases,
        net.activation,
        MODEL_ID,
        names,
        net.activations,
    )
    model = to_onnx(net, doc="calmcue voice-stress model; see models/MODEL_CARD.md")
    from onnx import helper

    helper.set_model_props(
        model,
        {
            "feature_order": ",".join(names),
            "threshold": f"{t.threshold:.6f}",
            "clip_aggregate": f"mean over windows with speech >= {t.settings.speech_min}",
            "model_id": MODEL_ID,
        },
    )
    onnx_bytes = model.SerializeToString()
    (out_dir / "stress.onnx").write_bytes(onnx_bytes)
    ccm = to_compact(model, MODEL_ID)
    (out_dir / "stress.ccm").write_bytes(ccm)
    meta = {
        "model_id": MODEL_ID,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "threshold": round(t.threshold, 6),
        "false_cue_target": t.settings.false_cue_rate,
        "speech_min": t.settings.speech_min,
        "clip_aggregate": "mean",
        "n_params": net.n_params,
        "feature_order": list(names),
        "opset": 13,
        "features_version": t.features_version,
        "ignored_features": list(t.settings.ignore),
    }
    (out_dir / "stress.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_folds(t, out_dir / "stress_folds.npz")
    metrics_path = work / "metrics.json"
    if out_dir == SHIPPED and metrics_path.exists():
        update_card(json.loads(metrics_path.read_text()))
    log.info(
        "exported %s (%d bytes, %d parameters) and %s (%d bytes)",
        out_dir / "stress.onnx",
        len(onnx_bytes),
        net.n_params,
        out_dir / "stress.ccm",
        len(ccm),
    )
    return meta


# ---- model card figures ---------------------------------------------------------------------------

CARD = SHIPPED / "MODEL_CARD.md"
_START = "<!-- metrics:start (written by `calmcue model export` from var/model/metrics.json) -->"
_END = "<!-- metrics:end -->"
_COLS = (
    ("auc", "AUC"),
    ("balanced_accuracy", "bal. acc."),
    ("stress_detected", "stress cued"),
    ("false_cue_rate", "calm cued"),
    ("happy_as_stress", "happy cued"),
    ("surprised_as_stress", "surprised cued"),
)


def render_metrics(m: dict) -> str:
    lines = [
        f"Shipped threshold **{m['threshold']}** (target: {m['false_cue_target']:.0%} of held-out "
        f"calm clips cued, clean audio, with lead-in). {m['n_speakers']} speakers; clips: "
        + ", ".join(f"{k} {v}" for k, v in m["n_clips"].items())
        + ".",
        "",
        *_summary(m),
        "",
    ]
    titles = {
        ("speaker_folds", "with_lead_in"): "Speakers held out (6 speaker-grouped folds), "
        "conversation starts with another neutral clip of the same speaker",
        ("speaker_folds", "no_lead_in"): "Speakers held out, no lead-in (baseline from the clip "
        "itself)",
        ("gender_out", "with_lead_in"): "Gender held out (train on men, test on women and vice "
        "versa), with lead-in",
        ("gender_out", "no_lead_in"): "Gender held out, no lead-in",
    }
    for (g, k), title in titles.items():
        res = m[g][k]
        lines += [f"**{title}** — all at the shipped threshold", ""]
        lines.append("| copy | " + " | ".join(c[1] for c in _COLS) + " |")
        lines.append("|---" * (len(_COLS) + 1) + "|")
        for cond, r in res.items():
            lines.append(
                f"| {cond} | "
                + " | ".join(f"{r.get(c[0], float('nan')):.3f}" for c in _COLS)
                + " |"
            )
        lines.append("")
    a = m.get("anchor_egemaps_lr")
    if a:
        lines += [
            "**Anchor: openSMILE eGeMAPSv02 functionals + logistic regression** (same folds, same "
            f"copies; its own 0.5 threshold, and a threshold calibrated like ours = "
            f"{a['threshold_calibrated']})",
            "",
            "| split | copy | AUC | bal. acc. @0.5 | bal. acc. @calibrated | calm cued @calibrated |",
            "|---|---|---|---|---|---|",
        ]
        for split in ("speaker_folds", "gender_out"):
            for cond, r in a[split].items():
                lines.append(
                    f"| {split} | {cond} | {r['auc']:.3f} | {r['balanced_accuracy@0.5']:.3f} | "
                    f"{r['balanced_accuracy@calibrated']:.3f} | "
                    f"{r['false_cue_rate@calibrated']:.3f} |"
                )
        lines.append("")
    return "\n".join(lines)


def _summary(m: dict) -> list[str]:
    ours = m["speaker_folds"]["with_lead_in"]
    bare = m["speaker_folds"]["no_lead_in"]
    gender = m["gender_out"]["with_lead_in"]
    every = [*ours.values(), *gender.values()]
    out = [
        f"- Speakers held out, clean: **AUC {ours['clean']['auc']:.3f}, balanced accuracy "
        f"{ours['clean']['balanced_accuracy']:.3f}** at the shipped threshold "
        f"(no lead-in: AUC {bare['clean']['auc']:.3f}, balanced accuracy "
        f"{bare['clean']['balanced_accuracy']:.3f}).",
        f"- Cross-corpus-style check (gender held out, and level-shifted −20..+10 dB, noisy and "
        f"reverberant copies of held-out speakers), same threshold: balanced accuracy "
        f"**≥ {min(r['balanced_accuracy'] for r in every):.3f}** in every row; calm clips cued "
        f"{min(r['false_cue_rate'] for r in every):.3f}–{max(r['false_cue_rate'] for r in every):.3f}"
        f" (target {m['false_cue_target']:.2f}); across recording levels alone "
        f"{min(ours[c]['false_cue_rate'] for c in _LEVELS if c in ours):.3f}–"
        f"{max(ours[c]['false_cue_rate'] for c in _LEVELS if c in ours):.3f}.",
        f"- Threshold picked without the fold it is judged on (nested): balanced accuracy "
        f"{m['nested_threshold']['balanced_accuracy']:.3f}, calm clips cued "
        f"{m['nested_threshold']['false_cue_rate']:.3f}."
        if "nested_threshold" in m
        else "",
        f"- Happy clips cued {ours['clean'].get('happy_as_stress', float('nan')):.3f}, surprised "
        f"{ours['clean'].get('surprised_as_stress', float('nan')):.3f} (clean, held out): the "
        "model hears arousal, not its reason.",
    ]
    a = m.get("anchor_egemaps_lr")
    if a:
        af = a["speaker_folds"]
        ag = a["gender_out"]
        out.append(
            f"- Anchor (eGeMAPS + LR), same splits: clean AUC {af['clean']['auc']:.3f}, balanced "
            f"accuracy {af['clean']['balanced_accuracy@0.5']:.3f} at its 0.5 threshold; over the "
            f"same copies its balanced accuracy falls to "
            f"{min(r['balanced_accuracy@0.5'] for r in [*af.values(), *ag.values()]):.3f} (0.5) / "
            f"{min(r['balanced_accuracy@calibrated'] for r in [*af.values(), *ag.values()]):.3f}"
            f" (calibrated like ours), calm clips cued up to "
            f"{max(r['false_cue_rate@calibrated'] for r in [*af.values(), *ag.values()]):.3f}. "
            f"Ours: {min(r['balanced_accuracy'] for r in every):.3f} and "
            f"{max(r['false_cue_rate'] for r in every):.3f}. On clean held-out speakers the two "
            f"are level (AUC {ours['clean']['auc']:.3f} vs {af['clean']['auc']:.3f}); ours keeps "
            "its meaning across level, noise, room and gender, the anchor does not."
        )
    return out


_LEVELS = ("gain-20dB", "gain-10dB", "clean", "gain+6dB", "gain+10dB")


def update_card(metrics: dict, card: Path = CARD) -> bool:
    if not card.exists():
        return False
    text = card.read_text()
    if _START not in text or _END not in text:
        return False
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    card.write_text(head + _START + "\n\n" + render_metrics(metrics) + "\n" + _END + tail)
    return True
