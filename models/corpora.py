"""Training data: a manifest CSV (path, speaker, label) and loaders for common corpus layouts.

A customer retraining on licensed data either writes a manifest themselves or points one of the
loaders at an unpacked corpus; every loader returns the same `Clip` rows, so the rest of the
pipeline never knows which corpus it is reading. Labels are normalised to one vocabulary
(`LABELS`); the stress target is angry + fearful against neutral + calm.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
STRESS_LABELS = frozenset({"angry", "fearful"})
CALM_LABELS = frozenset({"neutral", "calm"})
# Reported separately: aroused but not stressed, the usual source of false cues.
OTHER_AROUSED_LABELS = ("happy", "surprised")

AUDIO_SUFFIXES = (".wav", ".flac")


class CorpusError(ValueError):
    """A manifest or corpus folder that cannot be read; the message says how to fix it."""


@dataclass(frozen=True)
class Clip:
    path: Path  # absolute
    speaker: str  # unique across corpora, e.g. "ravdess_01"
    label: str  # one of LABELS
    gender: str = ""  # "f", "m" or "" when the corpus does not say

    @property
    def stress(self) -> int | None:
        """1 = stress, 0 = calm, None = not part of the binary target."""
        if self.label in STRESS_LABELS:
            return 1
        if self.label in CALM_LABELS:
            return 0
        return None


# ---- manifest CSV ---------------------------------------------------------------------------

REQUIRED_COLUMNS = ("path", "speaker", "label")


def read_manifest(manifest: str | Path) -> list[Clip]:
    """Rows of a manifest CSV; relative paths are relative to the manifest's folder.

    Required columns: path, speaker, label. Optional: gender (f/m). Unknown labels are an error
    that names the row, so a typo never silently drops clips from training.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise CorpusError(
            f"manifest {manifest} not found; give a CSV with columns path,speaker,label"
        )
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CorpusError(
                f"{manifest}: missing column(s) {', '.join(missing)}; "
                f"the header must contain {','.join(REQUIRED_COLUMNS)}"
            )
        clips = []
        for line, row in enumerate(reader, start=2):
            label = normalise_label(row["label"])
            if label is None:
                raise CorpusError(
                    f"{manifest}:{line}: unknown label {row['label']!r}; use one of {', '.join(LABELS)}"
                )
            if not row["path"] or not row["speaker"]:
                raise CorpusError(f"{manifest}:{line}: path and speaker must not be empty")
            path = Path(row["path"])
            if not path.is_absolute():
                path = manifest.parent / path
            clips.append(Clip(path, row["speaker"], label, (row.get("gender") or "").lower()))
    return clips


def write_manifest(clips: Iterable[Clip], manifest: str | Path) -> None:
    manifest = Path(manifest)
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "speaker", "label", "gender"])
        for c in clips:
            writer.writerow([str(c.path), c.speaker, c.label, c.gender])


_ALIASES = {
    "neu": "neutral",
    "n": "neutral",
    "neutral": "neutral",
    "calm": "calm",
    "hap": "happy",
    "happy": "happy",
    "joy": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "ang": "angry",
    "angry": "angry",
    "anger": "angry",
    "fea": "fearful",
    "fear": "fearful",
    "fearful": "fearful",
    "dis": "disgust",
    "disgust": "disgust",
    "sur": "surprised",
    "surprised": "surprised",
    "surprise": "surprised",
    "ps": "surprised",
    "boredom": "boredom",
    "bored": "boredom",
}


def normalise_label(label: str) -> str | None:
    return _ALIASES.get(label.strip().lower())


# ---- corpus layouts --------------------------------------------------------------------------
# Each parser maps one file name to (speaker, label, gender) or None when the file is not a
# speech clip of that corpus (e.g. RAVDESS song, stray files).

_RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_ravdess(name: str) -> tuple[str, str, str] | None:
    """`03-01-05-01-01-01-12.wav`: modality-channel-emotion-intensity-statement-rep-actor.

    Only the speech channel (01) is used; odd actor numbers are male, even female.
    """
    m = _RAVDESS_RE.match(Path(name).stem)
    if not m or m.group(2) != "01" or m.group(3) not in _RAVDESS_EMOTIONS:
        return None
    actor = int(m.group(7))
    return f"ravdess_{actor:02d}", _RAVDESS_EMOTIONS[m.group(3)], "m" if actor % 2 else "f"


_CREMAD_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_CREMAD_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def parse_cremad(name: str) -> tuple[str, str, str] | None:
    """`1001_DFA_ANG_XX.wav`: actor_sentence_emotion_level (gender is in a separate CSV)."""
    m = _CREMAD_RE.match(Path(name).stem)
    if not m or m.group(3) not in _CREMAD_EMOTIONS:
        return None
    return f"cremad_{m.group(1)}", _CREMAD_EMOTIONS[m.group(3)], ""


_EMODB_EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
# Speaker numbers of Emo-DB's ten actors and their gender (from the corpus documentation).
_EMODB_GENDER = {
    "03": "m",
    "08": "f",
    "09": "f",
    "10": "m",
    "11": "m",
    "12": "m",
    "13": "f",
    "14": "f",
    "15": "m",
    "16": "f",
}
_EMODB_RE = re.compile(r"^(\d\d)([abn]\d\d)([WLEAFTN])([a-z])$")


def parse_emodb(name: str) -> tuple[str, str, str] | None:
    """`03a01Fa.wav`: speaker, text code, emotion letter (German initial), version."""
    m = _EMODB_RE.match(Path(name).stem)
    if not m:
        return None
    spk = m.group(1)
    return f"emodb_{spk}", _EMODB_EMOTIONS[m.group(3)], _EMODB_GENDER.get(spk, "")


_TESS_RE = re.compile(r"^(OAF|YAF)_(.+)_(angry|disgust|fear|happy|neutral|ps|sad)$", re.IGNORECASE)


def parse_tess(name: str) -> tuple[str, str, str] | None:
    """`OAF_back_angry.wav`: speaker (older/younger adult female), word, emotion."""
    m = _TESS_RE.match(Path(name).stem)
    if not m:
        return None
    label = normalise_label(m.group(3))
    assert label is not None
    return f"tess_{m.group(1).upper()}", label, "f"


PARSERS = {
    "ravdess": parse_ravdess,
    "cremad": parse_cremad,
    "emodb": parse_emodb,
    "tess": parse_tess,
}


def scan_corpus(kind: str, root: str | Path) -> list[Clip]:
    """All speech clips under `root` laid out as corpus `kind` (ravdess, cremad, emodb, tess)."""
    if kind not in PARSERS:
        raise CorpusError(f"unknown corpus layout {kind!r}; choose one of {', '.join(PARSERS)}")
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"corpus folder {root} not found")
    parse = PARSERS[kind]
    clips = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        parsed = parse(path.name)
        if parsed is not None:
            clips.append(Clip(path.resolve(), *parsed))
    if not clips:
        raise CorpusError(
            f"no {kind} clips found under {root}; check the folder and the file-name convention"
        )
    return clips


def load_ravdess(root: str | Path) -> list[Clip]:
    """RAVDESS as shipped in the shared folder (its manifest.csv), with gender from the actor."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return scan_corpus("ravdess", root)
    clips = []
    for c in read_manifest(manifest):
        parsed = parse_ravdess(c.path.name)
        clips.append(Clip(c.path, c.speaker, c.label, parsed[2] if parsed else c.gender))
    return clips
