"""Cue settings tried on the benchmark's front-end records (models/conversation_records, over
models.conversations `record`/`replay`): at the shipped defaults every conversation's cue
timeline equals the one models.conversations.run_condition gives on onnxruntime, so settings
tried on the records are judged on what the benchmark would have measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import conversation_records as cr
from models import conversations as cv
from models.corpora import load_ravdess


@pytest.fixture(scope="module")
def recorded(ravdess: Path, tmp_path_factory: pytest.TempPathFactory):
    clips = load_ravdess(ravdess)
    models = cv.HeldOutModels.shipped()
    cache = cv.ClipCache(clips)
    specs = cv.build_specs(clips, per_speaker=1, seed=3)
    speakers = sorted({s.speaker for s in specs})[::8]  # one speaker from every other fold
    specs = [s for s in specs if s.speaker in speakers]
    cond = cv.CONDITIONS["white-60"]
    ref = cv.run_condition(cond, specs, clips, models, cache, "onnxruntime")
    folder = tmp_path_factory.mktemp("records")
    cv.run_condition(cond, specs, clips, models, cache, records=folder)  # records them

    def replay(overrides: dict | None = None) -> list[cv.Result]:
        return cv.run_condition(
            cond, specs, clips, models, cache, records=folder, overrides=overrides
        )

    assert cv.records_path(folder, cond, specs).exists()
    return ref, replay


def test_replay_at_the_defaults_gives_the_benchmarks_cues(recorded):
    ref, replay = recorded
    got = replay()
    assert [r.cues for r in got] == [r.cues for r in ref]
    assert [r.conversations for r in got] == [r.conversations for r in ref]
    assert sum(len(r.cues) for r in ref) > 0  # the slice exercises the policy
    row = {**cv.summarise(got), "misses": cv.misses(cv.summarise(got))}
    assert row == {**cv.summarise(ref), "misses": cv.misses(cv.summarise(ref))}
    assert cr.pooled({"white-60": row})["false_cues_per_hour"] == row["false_cues_per_hour"]


def test_settings_change_the_replay_and_recorded_ones_are_refused(recorded):
    ref, replay = recorded
    strict = replay({"stress_threshold": 0.95, "intense_threshold": 1.0})
    assert sum(len(r.cues) for r in strict) < sum(len(r.cues) for r in ref)
    with pytest.raises(ValueError, match="min_speech"):
        replay({"min_speech": 0.5})
    with pytest.raises(SystemExit):
        cr.main(["--set", "min_speech=0.5"])
