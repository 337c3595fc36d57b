"""`calmcue score`: formats, sample rates, bad files, and both engines agreeing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calmcue.cli import main
from models.scoring import score_files


def _voice(rate: int, seconds: float = 3.0, f0: float = 140.0, loud: float = 0.2) -> np.ndarray:
    """Synthetic voiced syllables (harmonics, gliding pitch) with pauses between them."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 0.5 * (t > 0.3)
    return (loud * x * env / 3).astype(np.float32)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    wav = tmp_path / "stereo44k.wav"
    v = _voice(44100)
    sf.write(wav, np.stack([v, v], axis=1), 44100)
    flac = tmp_path / "mono16k.flac"
    sf.write(flac, _voice(16000), 16000)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really audio")
    return {"wav": wav, "flac": flac, "junk": junk, "missing": tmp_path / "missing.flac"}


def test_score_cli_one_line_per_file_and_errors_do_not_stop_others(files, capsys):
    order = [files["wav"], files["junk"], files["missing"], files["flac"]]
    code = main(["score", *map(str, order)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 1  # some files failed
    assert [x["path"] for x in lines] == [str(p) for p in order]
    assert "cannot read audio" in lines[1]["error"] and "WAV or FLAC" in lines[1]["error"]
    assert "no such file" in lines[2]["error"]
    for res in (lines[0], lines[3]):
        assert 0.0 <= res["score"] <= 1.0
        ts = [w["t"] for w in res["windows"]]
        assert ts == pytest.approx([1.0 + 0.25 * i for i in range(len(ts))])
        assert len(ts) == 9
        for w in res["windows"]:
            assert 0.0 <= w["speech"] <= 1.0
            if w["speech"] >= 0.4:
                assert 0.0 <= w["score"] <= 1.0
            else:
                assert w["score"] is None  # a pause has no stress score
    # resampled 44.1 kHz stereo and native 16 kHz mono of the same signal score alike
    assert abs(lines[0]["score"] - lines[3]["score"]) < 0.05


def test_micropython_engine_matches_onnxruntime(files):
    paths = [str(files["wav"]), str(files["missing"]), str(files["flac"])]
    ref = list(score_files(paths, "onnxruntime"))
    dev = list(score_files(paths, "micropython"))
    assert "error" in dev[1] and dev[1]["path"] == paths[1]
    for a, b in ((ref[0], dev[0]), (ref[2], dev[2])):
        assert abs(a["score"] - b["score"]) <= 0.01
        assert [w["t"] for w in a["windows"]] == [w["t"] for w in b["windows"]]
        assert [w["speech"] for w in a["windows"]] == [w["speech"] for w in b["windows"]]
        diffs = [
            abs(x["score"] - y["score"])
            for x, y in zip(a["windows"], b["windows"], strict=True)
            if x["score"] is not None
        ]
        assert max(diffs) <= 0.01


def test_unknown_engine_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--engine", "tflite", "x.wav"])
    assert "invalid choice" in capsys.readouterr().err


def test_recording_level_does_not_change_the_meaning_of_a_score(ravdess: Path):
    """Held-in-memory gain copies (-20..+10 dB) of 48 RAVDESS clips: scores barely move and
    almost no decision at the shipped threshold flips."""
    from models import augment
    from models.corpora import load_ravdess
    from models.dataset import read_audio, to_pcm
    from models.scoring import OnnxScorer, shipped

    model = shipped()
    scorer = OnnxScorer(model)
    clips = [c for c in load_ravdess(ravdess) if c.stress is not None][::14]
    flips = 0
    for db in (-20.0, -10.0, 6.0, 10.0):
        diffs = []
        for c in clips:
            x = read_audio(c.path).astype(np.float32) / 32768.0
            base = scorer.score_pcm(to_pcm(x))["score"]
            moved = scorer.score_pcm(to_pcm(augment.gain(x, db)))["score"]
            diffs.append(abs(moved - base))
            flips += (moved >= model.threshold) != (base >= model.threshold)
        assert np.mean(diffs) < 0.05, (db, np.mean(diffs))
    assert flips <= 4  # of 4 x 48 decisions


def test_clip_shorter_than_a_window_has_no_score_on_both_engines(tmp_path: Path):
    short = tmp_path / "short.wav"
    sf.write(short, _voice(16000, seconds=0.6), 16000)
    for engine in ("onnxruntime", "micropython"):
        (res,) = score_files([str(short)], engine)
        assert res == {"path": str(short), "score": None, "windows": []}, engine


@pytest.mark.parametrize("level_db", [-70.0, -55.0, -40.0])
def test_pauses_and_pure_noise_have_no_stress_score(tmp_path: Path, level_db: float):
    """Issue 13: every pause and pure noise at any level used to read 1.0. A window without
    enough speech is null, says how much speech it holds, and a file of noise has no score."""
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000 * 4) * 10 ** (level_db / 20)).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, noise, 16000)
    speechy = tmp_path / "talk_then_pause.wav"
    under = (rng.standard_normal(16000 * 3) * 10 ** (level_db / 20)).astype(np.float32)
    # a room's noise runs under the talk and on through the pause
    sf.write(speechy, np.concatenate([_voice(16000) + under, noise]), 16000)
    for engine in ("onnxruntime", "micropython"):
        res, talk = score_files([str(path), str(speechy)], engine)
        assert res["score"] is None, engine
        assert res["windows"] and all(w["score"] is None for w in res["windows"]), engine
        assert all(w["speech"] < 0.4 for w in res["windows"]), engine
        scored = [w for w in talk["windows"] if w["score"] is not None]
        paused = [w for w in talk["windows"] if w["t"] > 4.5]
        assert scored and talk["score"] is not None, engine
        assert paused and all(w["score"] is None for w in paused), engine
