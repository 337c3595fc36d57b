"""Recorded benchmark conversations replay to the benchmark's own cues (models/conversation_records):
at the shipped defaults every conversation's cue timeline equals the one
models.conversations.run_condition gives on onnxruntime, so settings tried on the records are
judged on what the benchmark would have measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import conversation_records as cr
from models import conversations as cv
from models.corpora import load_ravdess


@pytest.fixture(scope="module")
def recorded(ravdess: Path):
    clips = load_ravdess(ravdess)
    models = cv.HeldOutModels.shipped()
    cache = cv.ClipCache(clips)
    specs = cv.build_specs(clips, per_speaker=1, seed=3)
    speakers = sorted({s.speaker for s in specs})[::8]  # one speaker from every other fold
    specs = [s for s in specs if s.speaker in speakers]
    cond = cv.CONDITIONS["white-60"]
    ref = cv.run_condition(cond, specs, clips, models, cache, "onnxruntime")
    return ref, cr.record(cond, specs, clips, models, cache)


def test_replay_at_the_defaults_gives_the_benchmarks_cues(recorded, tmp_path: Path):
    ref, rec = recorded
    path = tmp_path / "r.npz"
    cr.save(rec, path)
    got = cr.replay_results(cr.load(path))
    assert [r.cues for r in got] == [r.cues for r in ref]
    assert [r.conversations for r in got] == [r.conversations for r in ref]
    assert sum(len(r.cues) for r in ref) > 0  # the slice exercises the policy
    assert cr.replay(rec) == {**cv.summarise(ref), "misses": cv.misses(cv.summarise(ref))}


def test_settings_change_the_replay_and_recorded_ones_are_refused(recorded):
    ref, rec = recorded
    strict = cr.replay_results(rec, {"stress_threshold": 0.95, "intense_threshold": 1.0})
    assert sum(len(r.cues) for r in strict) < sum(len(r.cues) for r in ref)
    with pytest.raises(ValueError, match="min_speech"):
        cr.replay(rec, {"min_speech": 0.5})
