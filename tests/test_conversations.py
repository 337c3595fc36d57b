"""The conversation benchmark's `make test` slice (issue 13): whole RAVDESS conversations
through features, the fold model that never heard the speaker, attribution and the cue policy.

- the same conversations on onnxruntime (numpy front end) and on the MicroPython unix port
  (the headset's code) give the same cues, each within one hop;
- a regression guard on what staff feel, measured on held-out speakers: calm conversations
  rarely cued, escalations cued soon after their onset, settled after the calm return.
The full benchmark with every condition is `calmcue model evaluate --conversations` (make bench).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import conversations as cv
from models.corpora import load_ravdess


@pytest.fixture(scope="module")
def bench(ravdess: Path):
    clips = load_ravdess(ravdess)
    return clips, cv.HeldOutModels.shipped(), cv.ClipCache(clips)


def test_both_engines_give_the_same_cue_timelines(bench, tmp_path: Path):
    clips, models, cache = bench
    specs = cv.build_specs(clips, per_speaker=1, seed=7)
    # one speaker from each fold, every kind of conversation
    speakers = sorted({s.speaker for s in specs})[::4]
    specs = [s for s in specs if s.speaker in speakers]
    compared = cues = 0
    for name in cv.QUICK_CONDITIONS:
        cond = cv.CONDITIONS[name]
        ref = cv.run_condition(cond, specs, clips, models, cache, "onnxruntime")
        dev = cv.run_condition(cond, specs, clips, models, cache, "micropython", tmp_path)
        assert cv.compare_timelines(ref, dev) == [], name
        compared += len(ref)
        cues += sum(len(r.cues) for r in ref)
    assert compared == 2 * 5 * len(speakers)
    assert cues >= compared // 2  # the slice exercises the policy, not only silence


def test_calm_conversations_stay_quiet_and_escalations_are_cued(bench):
    """Regression guard at the shipped defaults (white floor at -60 dBFS, no attribution, as a
    counter without enrolment), every speaker once per kind. The bounds are the figures
    measured when the policy and model were chosen, with a little room; the targets and the
    rows that still miss them are in models/MODEL_CARD.md."""
    clips, models, cache = bench
    specs = [
        s for s in cv.build_specs(clips, per_speaker=1, seed=0) if s.kind in ("calm", "angry")
    ]
    res = cv.run_condition(cv.CONDITIONS["white-60"], specs, clips, models, cache)
    row = cv.summarise(res)
    print(cv._line(row))
    assert row["calm_cued"] <= 0.25  # measured 0.17; before issue 13: 0.63
    assert row["angry"]["cued"] >= 0.9  # measured 1.0
    assert row["angry"]["latency_median_s"] <= 3.0  # measured 1.7 s
    assert row["angry"]["settled"] >= 0.8  # measured 0.88
    # no stress cue ever comes before the customer's calm level is known (baseline_s of speech)
    first = [min((t for t, c in r.cues if c in cv.STRESS_CUES), default=np.inf) for r in res]
    assert min(first) >= 2.0


def test_conditions_are_what_they_say(bench):
    """The rendered audio has the stated floor and level, and the timeline is right."""
    clips, models, cache = bench
    spec = next(s for s in cv.build_specs(clips, 1, 0) if s.kind == "angry")
    loud = cv.render(spec, cv.CONDITIONS["white-35"], cache)
    quiet = cv.render(spec, cv.CONDITIONS["white-70"], cache)
    head = int(0.4 * 16000)  # the silence before the first word
    for audio, db in ((loud, -35.0), (quiet, -70.0)):
        rms = np.sqrt(np.mean((audio.pcm[:head].astype(np.float64) / 32768) ** 2))
        assert abs(20 * np.log10(rms) - db) < 1.5
        assert audio.onset_s is not None and audio.stretch_end_s is not None
        assert 0 < audio.onset_s < audio.stretch_end_s < audio.pcm.size / 16000
    silent = cv.render(spec, cv.CONDITIONS["silence"], cache)
    assert not silent.pcm[:head].any()
    counter = cv.render(spec, cv.CONDITIONS["counter"], cache, staff_pool=[0, 1])
    assert counter.enrol is not None and counter.pcm.size > silent.pcm.size


def test_babble_is_set_against_the_customers_calm_voice(bench, monkeypatch):
    """Background chatter sits `babble_snr` below the customer's calm turns, whatever the
    customer does later: shouting does not make the room louder (it once did, which put the
    calm turns of an angry conversation at about 0 dB SNR)."""
    from models import augment

    clips, models, cache = bench
    spec = next(s for s in cv.build_specs(clips, 1, 0) if s.kind == "angry")
    assert spec.stress_span is not None
    by = cv._by_speaker(clips)
    pool = [i for s, labs in by.items() if s != spec.speaker for v in labs.values() for i in v]
    made = []
    real = cv._babble

    def babble(n, ref_power, snr_db, *rest):
        out = real(n, ref_power, snr_db, *rest)
        made.append((ref_power, float(np.mean(out.astype(np.float64) ** 2))))
        return out

    monkeypatch.setattr(cv, "_babble", babble)
    cv.render(spec, cv.CONDITIONS["babble-20dB"], cache, pool[::7])
    first, last = spec.stress_span
    calm = [cache[i] for k, i in enumerate(spec.clips) if not first <= k < last]
    shout = [cache[i] for i in spec.clips[first:last]]
    (ref, power), = made
    assert ref == pytest.approx(augment._active_power(np.concatenate(calm)), rel=1e-6)
    assert augment._active_power(np.concatenate(shout)) > 3 * ref  # the angry turns are louder
    assert 10 * np.log10(ref / power) == pytest.approx(20.0, abs=0.1)


def test_unknown_condition_is_refused_with_the_choices(capsys):
    from calmcue.cli import main

    code = main(["model", "evaluate", "--conversations", "--condition", "fog"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown condition 'fog'" in err and "white-60" in err


def test_saved_front_end_records_replay_to_the_same_cues_for_any_model(bench, tmp_path: Path):
    """`--records DIR`: the front end's window records are saved once and replayed through the
    model and policy; the cues are those of the full run, for the shipped folds and for another
    model (the records hold nothing of the model), in counter mode (enrolment, attribution)
    and without attribution."""
    from dataclasses import replace

    clips, models, cache = bench
    specs = cv.build_specs(clips, per_speaker=1, seed=3)
    speakers = sorted({s.speaker for s in specs})[::8]
    specs = [s for s in specs if s.speaker in speakers]
    # another model: every fold network's output bias raised, so it cues more
    other = cv.HeldOutModels(
        {
            k: replace(n, biases=[*n.biases[:-1], n.biases[-1] + 1.5])
            for k, n in models.by_speaker.items()
        },
        None,
    )
    for name in ("white-60", "counter"):
        cond = cv.CONDITIONS[name]
        for m in (models, other):
            ref = cv.run_condition(cond, specs, clips, m, cache)
            got = cv.run_condition(cond, specs, clips, m, cache, records=tmp_path)
            assert [r.cues for r in got] == [r.cues for r in ref], name
            assert [r.conversations for r in got] == [r.conversations for r in ref]
            assert cv.summarise(got) == cv.summarise(ref)
        assert cv.records_path(tmp_path, cond, specs).exists()
    a = cv.run_condition(cv.CONDITIONS["white-60"], specs, clips, models, cache, records=tmp_path)
    b = cv.run_condition(cv.CONDITIONS["white-60"], specs, clips, other, cache, records=tmp_path)
    assert [r.cues for r in a] != [r.cues for r in b]  # the model still decides


def test_lively_headset_wearer_speaks_non_calm_clips_at_the_calm_gain(bench, monkeypatch):
    """`headset-lively`: the headset row with the wearer's turns drawn from their happy and
    surprised clips, at the gain their calm clips set; `headset` keeps calm turns."""

    class Seen(cv.ClipCache):
        def __init__(self, clips, cache):
            super().__init__(clips)
            self._cache = cache._cache  # decoded clips shared with the module's cache
            self.seen: list[int] = []

        def __getitem__(self, i: int) -> np.ndarray:
            self.seen.append(i)
            return super().__getitem__(i)

    clips, models, cache = bench
    names = list(cv.CONDITIONS)
    assert cv.CONDITIONS["headset-lively"].mode == "headset"
    assert names.index("headset-lively") == len(names) - 1  # appended: other rows' seeds kept
    spec = next(s for s in cv.build_specs(clips, 1, 0) if s.kind == "calm")
    by = cv._by_speaker(clips)
    gains: dict[str, list[tuple[float, int]]] = {}
    real = cv._gain_to

    def gain_to(dbfs, xs):
        gains[name].append((dbfs, sum(x.size for x in xs)))
        return real(dbfs, xs)

    monkeypatch.setattr(cv, "_gain_to", gain_to)
    said: dict[str, list[str]] = {}
    audio: dict[str, cv.Audio] = {}
    for name in ("headset", "headset-lively"):
        gains[name] = []
        staff, turns = cv.staff_clips(cv.CONDITIONS[name], by, spec.staff)
        assert {clips[i].label for i in staff} <= {"neutral", "calm"}
        seen = Seen(clips, cache)
        audio[name] = cv.render(spec, cv.CONDITIONS[name], seen, (), staff, turns)
        fetched = [i for i in seen.seen if clips[i].speaker == spec.staff]
        assert fetched[: len(staff)] == staff  # the wearer's gain, from their calm clips
        said[name] = [clips[i].label for i in fetched[len(staff) :]]
        assert len(said[name]) == len(spec.clips) - 1  # a turn after each customer clip but one
    assert set(said["headset"]) <= {"neutral", "calm"}
    assert set(said["headset-lively"]) == {"happy", "surprised"}
    # the same gains for both rows: a lively turn is as loud as its clip is, not renormalised
    assert gains["headset-lively"] == gains["headset"] and len(gains["headset"]) == 2
    assert audio["headset"].calm_speech_s == audio["headset-lively"].calm_speech_s
    # paired with the headset row (its seeds): without the floor, the same lead-in and the same
    # first customer clip, and the wearer's first turn after the same pause
    from dataclasses import replace

    pcm = {}
    for name in ("headset", "headset-lively"):
        staff, turns = cv.staff_clips(cv.CONDITIONS[name], by, spec.staff)
        quiet = replace(cv.CONDITIONS[name], floor="none")
        pcm[name] = cv.render(spec, quiet, cache, (), staff, turns).pcm
    a, b = pcm["headset"], pcm["headset-lively"]
    lead = int(np.argmax(a != 0))
    first = lead + cache[spec.clips[0]].size
    assert lead > 0 and int(np.argmax(b != 0)) == lead
    assert np.array_equal(a[:first], b[:first])
    assert not np.array_equal(a[first : first + 16000 * 5], b[first : first + 16000 * 5])
