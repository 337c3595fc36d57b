"""The reference to beat: openSMILE eGeMAPS functionals + logistic regression.

Benchmark only (openSMILE's licence forbids shipping it; never imported at runtime). It runs on
the same clips, the same speaker folds, the same held-out gender split and the same robustness
copies as the calmcue model, so the model card can say honestly whether we beat it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from models import dataset, train
from models.corpora import Clip

log = logging.getLogger("calmcue.model")


def egemaps_table(clips: Sequence[Clip], condition: str, seed: int) -> np.ndarray:
    """(n_clips, 88) eGeMAPSv02 functionals under `condition`, cached under var/."""
    import opensmile

    key = hashlib.sha256(
        "|".join(["egemaps", condition, str(seed)] + [str(c.path) for c in clips]).encode()
    ).hexdigest()[:16]
    path = dataset.CACHE / f"egemaps-{condition}-{key}.npy"
    if path.exists():
        return np.load(path)
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    cond = dataset.CONDITIONS[condition]
    cond_id = list(dataset.CONDITIONS).index(condition)
    rows = []
    for i, c in enumerate(clips):
        rng = np.random.default_rng([seed, cond_id, i])
        x = cond(dataset.load_float(c.path), rng)
        rows.append(smile.process_signal(x, dataset.RATE).to_numpy()[0])
    table = np.nan_to_num(np.array(rows, dtype=np.float64))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)
    return table


def _fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x, y)


def evaluate(
    clips: Sequence[Clip],
    folds: Sequence[np.ndarray],
    conditions: Sequence[str],
    false_cue_rate: float,
    seed: int = 1,
) -> dict:
    """Held-out figures of the anchor, at its own 0.5 threshold and at a threshold picked like
    ours (the stated false-cue rate on held-out calm clips, clean)."""
    n = len(clips)
    y_all = np.array([-1 if c.stress is None else c.stress for c in clips])
    binary_ids = np.flatnonzero(y_all >= 0)
    clean = egemaps_table(clips, "clean", 0)
    splits = [(held, np.setdiff1d(binary_ids, held)) for held in folds]
    genders = sorted({c.gender for c in clips} - {""})
    gender_splits = [
        (
            np.array([i for i, c in enumerate(clips) if c.gender == g]),
            np.array([i for i in binary_ids if clips[int(i)].gender != g]),
        )
        for g in genders
    ]
    fold_models = [_fit(clean[tr], y_all[tr]) for _, tr in splits]
    gender_models = [_fit(clean[tr], y_all[tr]) for _, tr in gender_splits]
    oof = np.full(n, np.nan)
    for (held, _), m in zip(splits, fold_models, strict=True):
        oof[held] = m.predict_proba(clean[held])[:, 1]
    calm = y_all == 0
    own_thr = train.threshold_for(oof[calm], false_cue_rate)
    out: dict = {"threshold_calibrated": round(own_thr, 4)}
    for name, pairs in (
        ("speaker_folds", list(zip(splits, fold_models, strict=True))),
        ("gender_out", list(zip(gender_splits, gender_models, strict=True))),
    ):
        res = {}
        for cond in conditions:
            table = clean if cond == "clean" else egemaps_table(clips, cond, seed)
            scores = np.full(n, np.nan)
            for (held, _), m in pairs:
                scores[held] = m.predict_proba(table[held])[:, 1]
            at_half = train.summary(clips, scores, 0.5)
            at_cal = train.summary(clips, scores, own_thr)
            res[cond] = {
                "auc": at_half["auc"],
                "balanced_accuracy@0.5": at_half["balanced_accuracy"],
                "balanced_accuracy@calibrated": at_cal["balanced_accuracy"],
                "false_cue_rate@calibrated": at_cal["false_cue_rate"],
            }
        out[name] = res
    return out
