"""Training pipeline pieces: speaker folds, clip aggregation, threshold, a seconds-long smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import pipeline, train
from models.corpora import Clip, load_ravdess, write_manifest
from models.dataset import lead_ins


def _clips(n_speakers: int = 8) -> list[Clip]:
    out = []
    for s in range(n_speakers):
        for k, label in enumerate(("neutral", "calm", "angry", "fearful", "happy")):
            name = f"03-01-0{k + 1}-01-0{1 + s % 2}-01-{s + 1:02d}.wav"
            out.append(Clip(Path(f"/x/{s}/{name}"), f"spk{s}", label, "mf"[s % 2]))
    return out


def test_speaker_folds_never_share_a_speaker_and_mix_genders():
    clips = _clips(12)
    folds = train.speaker_folds(clips, 4)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(clips)))
    speakers = [{clips[i].speaker for i in f} for f in folds]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not speakers[a] & speakers[b]
    for f in folds:
        assert {clips[i].gender for i in f} == {"f", "m"}


def test_clip_score_is_mean_over_speech_windows():
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.95])
    sp = np.array([0.1, 0.8, 0.9, 1.0, 0.2])
    assert train.clip_score(s, sp) == pytest.approx(0.2)
    assert train.clip_score(s, np.full(5, 0.1)) == pytest.approx(0.49)  # no speech: all ties
    sp2 = np.array([0.0, 0.0, 0.3, 0.1, 0.3])  # no speech window: the most speech-like ones
    assert train.clip_score(s, sp2) == pytest.approx(0.575)
    assert train.clip_score(np.array([]), np.array([])) == 0.0


def test_threshold_for_false_cue_rate_and_metrics():
    calm = np.linspace(0, 1, 100)
    thr = train.threshold_for(calm, 0.05)
    assert np.mean(calm >= thr) <= 0.05 and np.mean(calm >= thr - 0.011) > 0.05
    y = np.array([0, 0, 1, 1])
    assert train.auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert train.balanced_accuracy(y, np.array([0.1, 0.6, 0.7, 0.2]), 0.5) == 0.5


def test_lead_in_is_another_neutral_clip_of_the_same_speaker():
    clips = _clips(3)
    leads = lead_ins(clips)
    for i, j in enumerate(leads):
        assert j is not None and j != i
        assert clips[j].speaker == clips[i].speaker
        assert clips[j].label in ("neutral", "calm")
    # the neutral clip itself starts with the calm one (the only other calm-ish clip)
    assert clips[leads[0]].label == "calm"


def test_smoke_train_evaluate_export(ravdess: Path, tmp_path: Path):
    """Seconds-long end-to-end run on a few RAVDESS speakers (the real run is `make model`)."""
    keep = {"ravdess_01", "ravdess_02", "ravdess_03", "ravdess_04"}
    wanted = ("neutral", "angry", "fearful", "calm")
    rows = [
        c
        for c in load_ravdess(ravdess)
        if c.speaker in keep and c.label in wanted and "-01-01-" in c.path.name[6:]
    ]
    write_manifest(rows, tmp_path / "m.csv")
    s = train.TrainSettings(hidden=(8,), max_iter=30, folds=2, ensemble=2)
    t = pipeline.run_train(str(tmp_path / "m.csv"), s, work=tmp_path, cache=None)
    assert len(t.fold_nets) == 2 and set(t.gender_nets) == {"f", "m"}
    assert 0.0 < t.threshold < 1.0
    m = pipeline.run_evaluate(work=tmp_path, cache=None, conditions=("clean", "gain-20dB"))
    assert set(m["speaker_folds"]["with_lead_in"]) == {"clean", "gain-20dB"}
    assert 0.0 <= m["speaker_folds"]["with_lead_in"]["clean"]["auc"] <= 1.0
    meta = pipeline.run_export(out_dir=tmp_path, work=tmp_path)
    assert (tmp_path / "stress.onnx").stat().st_size < 64 * 1024
    assert json.loads((tmp_path / "stress.json").read_text())["threshold"] == meta["threshold"]


def test_train_cli_reports_bad_data(tmp_path: Path, capsys):
    from calmcue.cli import main

    assert main(["model", "train", "--data", str(tmp_path / "none.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    write_manifest(_clips(2), tmp_path / "m.csv")
    assert main(["model", "train", "--data", str(tmp_path / "m.csv")]) == 2
    assert "at least 6 speakers" in capsys.readouterr().err


def test_training_babble_never_holds_a_held_out_voice():
    """Babble training copies (issue 13): the background talk under a speaker's clips comes
    from the other speakers of their own fold, so a fold model never hears a speaker it is
    judged on, not even in the background."""
    from models.dataset import babble_groups

    clips = _clips(12)
    folds = train.speaker_folds(clips, 4)
    groups = babble_groups(clips, 4)
    assert all(groups[s] for s in groups)  # everyone has someone talking behind them
    for held in folds:
        out = {clips[i].speaker for i in held}
        trained_on = {c.speaker for c in clips} - out
        heard = {b for s in trained_on for b in groups[s]}
        assert heard and not heard & out


def test_babble_copy_marks_where_the_customer_is_silent(ravdess: Path):
    """A babble training copy (issue 13) holds the same windows as the turn alone, with other
    people's speech added: the gate passes more windows, and each window records how much of
    it is the customer's own speech, the label's ground truth."""
    from models.dataset import _babble_table

    wanted = {"ravdess_01", "ravdess_02", "ravdess_03", "ravdess_04"}
    clips = [
        c
        for c in load_ravdess(ravdess)
        if c.speaker in wanted and c.label in ("neutral", "angry") and "-01-01-" in c.path.name[6:]
    ]
    table = _babble_table(clips, "train_babble1", True, 0, folds=2)
    assert table.own_speech is not None and table.own_speech.shape == table.speech.shape
    assert set(np.unique(table.clip)) == set(range(len(clips)))
    # babble only adds speech: where the customer is silent the gate can still pass
    assert np.all(table.speech >= table.own_speech - 0.05)
    background = (table.own_speech < 0.1) & (table.speech >= 0.4)
    assert background.any() and (table.own_speech >= 0.4).any()


def test_background_windows_weigh_less_and_classes_stay_balanced():
    """`TrainSettings.background_weight` (issue 13): windows of a babble copy where the customer
    is silent train as not stress at that weight; each class still holds half the total."""
    from models.dataset import Table

    clips = _clips(2)[:3]  # neutral, calm, angry of one speaker
    n = 6
    table = Table(
        clip=np.array([0, 0, 1, 2, 2, 2]),
        t=np.arange(n, dtype=float),
        speech=np.full(n, 0.9),
        features=np.arange(n * 2, dtype=np.float32).reshape(n, 2),
        own_speech=np.array([0.9, 0.0, 0.9, 0.9, 0.05, 0.8]),
    )
    x, y, w = train.training_windows([table], clips, np.arange(3), 0.4, (), 0.1, 0.25)
    assert y.tolist() == [0, 0, 0, 1, 0, 1]  # the angry clip's silent window is background
    assert w.tolist() == [1.0, 0.25, 1.0, 1.0, 0.25, 1.0]
    names = ("a", "b")
    net = train.fit_one(x, y, train.TrainSettings(hidden=(2,), max_iter=5), names, None, w)
    assert net.predict(x).shape == (n,)
    # the weights fit_one hands the MLP: background scaled, each class half of the total
    sw = train.class_weights(y, w)
    assert sw.sum() == pytest.approx(n)
    assert np.array_equal(train.class_weights(y, np.ones(n)), train.class_weights(y))
    assert sw[y == 1].sum() == pytest.approx(sw[y == 0].sum())
    assert sw[1] == pytest.approx(0.25 * sw[0])


def test_babble_recipe_default_keeps_cached_tables_and_others_do_not(ravdess: Path):
    """The default babble recipe adds nothing to the cache key (tables built before it stay
    valid, `make model` reproduces the shipped model); another recipe is another table, heard
    at the recipe's level."""
    from models.dataset import BabbleRecipe, _babble_table

    assert BabbleRecipe().key() == ""
    quiet = BabbleRecipe(gain_db=(-30.0, -30.0), floor_p=0.0)
    assert quiet.key() and quiet.key() != BabbleRecipe(floor_p=0.5).key()
    wanted = {"ravdess_01", "ravdess_02"}
    clips = [
        c
        for c in load_ravdess(ravdess)
        if c.speaker in wanted and c.label == "angry" and "-01-01-" in c.path.name[6:]
    ]
    loud = _babble_table(clips, "train_babble1", False, 0, 2, BabbleRecipe(gain_db=(0.0, 0.0)))
    soft = _babble_table(clips, "train_babble1", False, 0, 2, quiet)
    assert not np.array_equal(loud.features, soft.features)
    assert soft.own_speech is not None and (soft.own_speech >= 0.4).any()
