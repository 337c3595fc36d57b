"""Manifest and corpus-layout loaders, on synthetic file names (no audio needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models import augment
from models.corpora import (
    Clip,
    CorpusError,
    parse_cremad,
    parse_emodb,
    parse_ravdess,
    parse_tess,
    read_manifest,
    scan_corpus,
    write_manifest,
)


def test_ravdess_names():
    assert parse_ravdess("03-01-05-01-01-01-12.wav") == ("ravdess_12", "angry", "f")
    assert parse_ravdess("03-01-06-02-02-02-01.flac") == ("ravdess_01", "fearful", "m")
    assert parse_ravdess("03-01-02-01-01-01-03.wav") == ("ravdess_03", "calm", "m")
    assert parse_ravdess("03-02-05-01-01-01-12.wav") is None  # song channel
    assert parse_ravdess("notes.wav") is None


def test_cremad_names():
    assert parse_cremad("1001_DFA_ANG_XX.wav") == ("cremad_1001", "angry", "")
    assert parse_cremad("1091_TIE_NEU_XX.wav") == ("cremad_1091", "neutral", "")
    assert parse_cremad("1012_IEO_FEA_HI.wav")[1] == "fearful"
    assert parse_cremad("1001_DFA_XYZ_XX.wav") is None


def test_emodb_names():
    assert parse_emodb("03a01Wa.wav") == ("emodb_03", "angry", "m")
    assert parse_emodb("08b02Ab.wav") == ("emodb_08", "fearful", "f")
    assert parse_emodb("16a01Nc.wav") == ("emodb_16", "neutral", "f")
    assert parse_emodb("10a01La.wav")[1] == "boredom"
    assert parse_emodb("03a01Xa.wav") is None


def test_tess_names():
    assert parse_tess("OAF_back_angry.wav") == ("tess_OAF", "angry", "f")
    assert parse_tess("YAF_dog_fear.wav") == ("tess_YAF", "fearful", "f")
    assert parse_tess("OAF_bite_ps.wav")[1] == "surprised"
    assert parse_tess("YAF_home_neutral.wav")[1] == "neutral"
    assert parse_tess("readme.wav") is None


def test_scan_corpus_walks_folders(tmp_path: Path):
    for name in ("OAF_angry/OAF_back_angry.wav", "YAF_neutral/YAF_dog_neutral.wav", "junk.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    clips = scan_corpus("tess", tmp_path)
    assert [(c.speaker, c.label) for c in clips] == [("tess_OAF", "angry"), ("tess_YAF", "neutral")]
    assert [c.stress for c in clips] == [1, 0]
    with pytest.raises(CorpusError, match="no emodb clips"):
        scan_corpus("emodb", tmp_path)
    with pytest.raises(CorpusError, match="unknown corpus layout"):
        scan_corpus("iemocap", tmp_path)


def test_manifest_round_trip_and_errors(tmp_path: Path):
    clips = [
        Clip(tmp_path / "a.wav", "s1", "angry", "f"),
        Clip(tmp_path / "b.wav", "s2", "happy", ""),
    ]
    write_manifest(clips, tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == clips
    assert [c.stress for c in clips] == [1, None]

    (tmp_path / "rel.csv").write_text("path,speaker,label\nsub/x.wav,s9,ANG\n")
    (row,) = read_manifest(tmp_path / "rel.csv")
    assert row.path == tmp_path / "sub" / "x.wav" and row.label == "angry"

    (tmp_path / "bad.csv").write_text("path,speaker,label\nx.wav,s1,furious\n")
    with pytest.raises(CorpusError, match=r"bad.csv:2: unknown label 'furious'"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("file,speaker,label\n")
    with pytest.raises(CorpusError, match="missing column"):
        read_manifest(tmp_path / "cols.csv")
    with pytest.raises(CorpusError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def _tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float32)  # bursts and pauses like speech
    return (0.1 * np.sin(2 * np.pi * 200 * t) * env).astype(np.float32)


def test_augment_levels_snr_and_seeding():
    x = _tone()
    assert np.allclose(augment.gain(x, -20.0), x * 0.1, atol=1e-7)
    assert augment.gain(x, 40.0).max() <= 1.0  # clips like a real converter
    for snr in (30.0, 10.0, 0.0):
        y = augment.add_noise(x, snr, np.random.default_rng(1))
        noise = y - x
        measured = 10 * np.log10(augment._active_power(x) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5
    a = augment.random_copy(x, np.random.default_rng(7))
    b = augment.random_copy(x, np.random.default_rng(7))
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_reverb_decays_and_keeps_level():
    rng = np.random.default_rng(3)
    h = augment.room_impulse(0.5, rng)
    energy = np.cumsum(h[::-1] ** 2)[::-1]
    tail = energy[int(0.25 * 16000)] / energy[41]
    assert 1e-4 < tail < 0.1  # -30 dB at half the RT60, give or take the random tail
    x = _tone()
    y = augment.reverb(x, 0.5, rng)
    assert y.shape == x.shape
    assert abs(10 * np.log10(augment._active_power(y) / augment._active_power(x))) < 0.1
    assert np.mean(np.abs(y[x == 0])) > 1e-4  # the pauses fill with reverberation
