"""Audio in, window feature tables out: reading files as the device hears them, recording
conditions for robustness, conversation lead-ins for the baseline, and a feature cache.

Nothing derived from audio is written into the repository: the cache lives under var/ (git
ignored) and holds feature vectors only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import augment
from models.corpora import Clip

RATE = 16000
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "var" / "model-cache"
# Silence between the lead-in clip and the target: shorter than a conversation's end-silence,
# so the device treats both as one conversation and keeps its baseline. Training copies draw
# it from PAUSE_S (how long people pause between turns at a counter); evaluation uses GAP_S.
GAP_S = 0.4
PAUSE_S = (0.2, 2.0)
# Bumped whenever what a table holds changes (which windows, which audio), so stale cached
# tables are never read.
TABLE_VERSION = "2"
log = logging.getLogger("calmcue.model")


class AudioError(ValueError):
    """A file that cannot be scored; the message says what is wrong and what to do."""


def read_audio(path: str | Path) -> np.ndarray:
    """Any wav/flac (any rate, any channel count) -> 16 kHz mono int16, as the device hears it."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for the same problem
        raise AudioError(f"{path}: cannot read audio ({exc}); give a WAV or FLAC file") from None
    if data.size == 0:
        raise AudioError(f"{path}: the file holds no samples")
    mono = data.mean(axis=1)
    if rate != RATE:
        # Imported only here: scipy.signal takes longer to import than scoring a short file.
        from scipy.signal import resample_poly

        g = int(np.gcd(int(rate), RATE))
        mono = resample_poly(mono, RATE // g, int(rate) // g).astype(np.float32)
    return to_pcm(mono)


def to_pcm(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def load_float(path: Path) -> np.ndarray:
    return read_audio(path).astype(np.float32) / 32768.0


# ---- recording conditions ---------------------------------------------------------------------

Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _gain(db: float) -> Condition:
    return lambda x, rng: augment.gain(x, db)


def _noise(snr: float, kind: str) -> Condition:
    return lambda x, rng: augment.add_noise(x, snr, rng, kind)


def _reverb(rt60: float) -> Condition:
    return lambda x, rng: augment.reverb(x, rt60, rng)


def _train_copy(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return augment.random_copy(x, rng)[0]


# Robustness test conditions (held-out speakers only); "train_aug*" are random training copies.
CONDITIONS: dict[str, Condition] = {
    "clean": lambda x, rng: x,
    "gain-20dB": _gain(-20.0),
    "gain-10dB": _gain(-10.0),
    "gain+6dB": _gain(6.0),
    "gain+10dB": _gain(10.0),
    "pink-20dB": _noise(20.0, "pink"),
    "babble-15dB": _noise(15.0, "babble"),
    "white-20dB": _noise(20.0, "white"),
    "reverb-0.5s": _reverb(0.5),
    "train_aug1": _train_copy,
    "train_aug2": _train_copy,
    "train_aug3": _train_copy,
    "train_aug4": _train_copy,
    # Training conversations with other people talking in the background (built in
    # build_table, which knows the other clips): see _babble_windows.
    "train_babble1": _train_copy,
    "train_babble2": _train_copy,
}
BABBLE_PREFIX = "train_babble"
# Background talk in a babble training copy: this many dB below the customer's calm voice,
# by this many other speakers at once.
BABBLE_SNR_DB = (5.0, 25.0)
BABBLE_TALKERS = (1, 4)


@dataclass(frozen=True)
class BabbleRecipe:
    """How a babble training copy (_babble_table) is heard: background talk `snr_db` below the
    customer's calm voice by `talkers` other speakers, the customer's recording level drawn
    from `gain_db`, and (with probability `floor_p`) a room floor of `floor_db` dBFS under all
    of it. The defaults are the recipe the tables were first built with."""

    snr_db: tuple[float, float] = BABBLE_SNR_DB
    talkers: tuple[int, int] = BABBLE_TALKERS
    gain_db: tuple[float, float] = (-20.0, 10.0)
    floor_db: tuple[float, float] = (-75.0, -35.0)
    floor_p: float = 0.8

    def key(self) -> str:
        """Part of the cache key; empty for the default recipe (tables cached before it)."""
        return "" if self == BabbleRecipe() else repr(self)

LEVEL_CONDITIONS = ("gain-20dB", "gain-10dB", "clean", "gain+6dB", "gain+10dB")
NOISE_CONDITIONS = ("pink-20dB", "babble-15dB", "white-20dB", "reverb-0.5s")


# ---- window features ----------------------------------------------------------------------------


@dataclass
class Windows:
    """Window records of one clip: end time (s), speech fraction, model input vectors."""

    t: np.ndarray  # (n,)
    speech: np.ndarray  # (n,)
    features: np.ndarray  # (n, F) float32


Extractor = Callable[[np.ndarray, "np.ndarray | None"], Windows]


def extract(
    pcm: np.ndarray,
    lead_in: np.ndarray | None = None,
    gap_s: float = GAP_S,
    floor: np.ndarray | None = None,
) -> Windows:
    """Windows of `pcm` (int16, 16 kHz) as the device computes them.

    With `lead_in`, the conversation starts with that audio, then a pause of `gap_s`, then
    `pcm`; the windows that hold at least one hop of `pcm` are returned (also those that
    straddle the pause and the turn's first words, as the device sees them), with `t` measured
    from the start of `pcm`. `floor` (float32, at least as long as the whole) is a background
    added under everything, pause included: a real room is never digitally silent.
    """
    from models import features as fe

    if lead_in is None:
        audio = pcm
        offset = 0.0
    else:
        gap = np.zeros(int(gap_s * RATE), np.int16)
        audio = np.concatenate([lead_in, gap, pcm])
        offset = (lead_in.size + gap.size) / RATE
    if floor is not None:
        audio = to_pcm(audio.astype(np.float32) / 32768.0 + floor[: audio.size])
    feats, records = fe.extract(audio)
    t = np.array([r.t for r in records], dtype=np.float64) - offset
    keep = t >= (0.25 - 1e-6 if lead_in is not None else 1.0 - 1e-6)
    speech = np.array([r.speech for r in records], dtype=np.float64)
    return Windows(t[keep], speech[keep], feats[keep])


def feature_names() -> tuple[str, ...]:
    from models import features as fe

    return tuple(fe.FEATURE_NAMES)


def feature_version() -> str:
    """Changes whenever the numpy reference extractor changes, invalidating cached tables."""
    src = (REPO / "models" / "features.py").read_bytes()
    return hashlib.sha256(src).hexdigest()[:12]


# ---- lead-ins -----------------------------------------------------------------------------------


def lead_ins(clips: Sequence[Clip]) -> list[int | None]:
    """For each clip, the index of a *different* neutral/calm clip of the same speaker to start
    the conversation with (how a counter conversation usually begins), or None.

    Preference: neutral over calm, then a different sentence (RAVDESS statement field), so the
    baseline never sees the target's words.
    """
    by_speaker: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        if c.label in ("neutral", "calm"):
            by_speaker.setdefault(c.speaker, []).append(i)
    out: list[int | None] = []
    for i, c in enumerate(clips):
        cands = [j for j in by_speaker.get(c.speaker, []) if j != i]
        if not cands:
            out.append(None)
            continue

        def rank(j: int, c: Clip = c) -> tuple[int, int, str]:
            other = clips[j]
            same_text = _sentence(other.path) == _sentence(c.path)
            return (other.label != "neutral", same_text, other.path.name)

        out.append(min(cands, key=rank))
    return out


def _sentence(path: Path) -> str:
    parts = path.stem.split("-")
    return parts[4] if len(parts) == 7 else path.stem


# ---- feature tables -----------------------------------------------------------------------------


@dataclass
class Table:
    """All windows of a clip list under one condition; `clip` maps each window to its clip."""

    clip: np.ndarray  # (n,) int
    t: np.ndarray
    speech: np.ndarray
    features: np.ndarray  # (n, F)
    # Per window: how much of it the clip's own speaker fills (speech fraction without the
    # babble under it). None: no babble, `speech` says it. A window that passes the speech
    # gate only because of other people talking is background, not the clip's speaker: it
    # trains as "not stress" whatever the clip's label (models/train.py training_windows).
    own_speech: np.ndarray | None = None

    def subset(self, clip_ids: np.ndarray) -> Table:
        keep = np.isin(self.clip, clip_ids)
        bg = None if self.own_speech is None else self.own_speech[keep]
        return Table(self.clip[keep], self.t[keep], self.speech[keep], self.features[keep], bg)


def build_table(
    clips: Sequence[Clip],
    condition: str,
    baseline: bool,
    seed: int = 0,
    extractor: Extractor = extract,
    cache: Path | None = CACHE,
    folds: int = 6,
    babble: BabbleRecipe = BabbleRecipe(),
) -> Table:
    """Window features of every clip under `condition`, with or without a lead-in baseline.

    Each clip gets its own seeded generator (seed, condition, clip index), so the table does not
    depend on the order or subset it is built in. Cached under var/ by extractor version.
    """
    key = hashlib.sha256(
        "|".join(
            [
                feature_version() if extractor is extract else extractor.__name__,
                TABLE_VERSION,
                condition,
                str(baseline),
                str(seed),
            ]
            # which speakers may babble under which (see babble_groups)
            + (
                [f"own,folds={folds}" + babble.key()]
                if condition.startswith(BABBLE_PREFIX)
                else []
            )
            + [str(c.path) for c in clips]
        ).encode()
    ).hexdigest()[:16]
    path = cache / f"{condition}-{'base' if baseline else 'nobase'}-{key}.npz" if cache else None
    if path is not None and path.exists():
        z = np.load(path)
        bg = z["own_speech"] if "own_speech" in z.files else None
        return Table(z["clip"], z["t"], z["speech"], z["features"], bg)
    if condition.startswith(BABBLE_PREFIX):
        table = _babble_table(clips, condition, baseline, seed, folds, babble)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            assert table.own_speech is not None
            np.savez(
                path,
                clip=table.clip,
                t=table.t,
                speech=table.speech,
                features=table.features,
                own_speech=table.own_speech,
            )
        return table
    cond = CONDITIONS[condition]
    leads = lead_ins(clips) if baseline else [None] * len(clips)
    parts: list[tuple[int, Windows]] = []
    cond_id = list(CONDITIONS).index(condition)
    training = condition.startswith("train_")
    for i, c in enumerate(clips):
        rng = np.random.default_rng([seed, cond_id, i])
        x = cond(load_float(c.path), rng)
        lead = None
        j = leads[i]
        if j is not None:
            lead = to_pcm(cond(load_float(clips[j].path), rng))
        if training and lead is not None and extractor is extract:
            # A training copy is heard as a conversation: a random pause between the turns and
            # (mostly) a room's noise floor under all of it.
            gap = float(rng.uniform(*PAUSE_S))
            n = lead.size + int(gap * RATE) + x.size
            floor = augment.random_floor(n, rng) if rng.random() < 0.8 else None
            parts.append((i, extract(to_pcm(x), lead, gap, floor)))
        else:
            parts.append((i, extractor(to_pcm(x), lead)))
        if i % 200 == 199:
            log.info(
                "  %s %s: %d/%d clips", condition, "baseline" if baseline else "", i + 1, len(clips)
            )
    n_feat = max((w.features.shape[1] for _, w in parts if w.features.size), default=0)
    table = Table(
        np.concatenate([np.full(w.t.size, i) for i, w in parts]).astype(np.int64),
        np.concatenate([w.t for _, w in parts]),
        np.concatenate([w.speech for _, w in parts]),
        np.concatenate([w.features.reshape(-1, n_feat) for _, w in parts]).astype(np.float32),
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, clip=table.clip, t=table.t, speech=table.speech, features=table.features)
    return table


# ---- background talk ------------------------------------------------------------------------------


def speaker_folds(clips: Sequence[Clip], k: int) -> list[np.ndarray]:
    """k folds of whole speakers, each with a balanced mix of genders where known.

    Returns, per fold, the indices of its held-out clips; no speaker is in two folds.
    """
    speakers = sorted({c.speaker for c in clips})
    gender = {c.speaker: c.gender for c in clips}
    ordered = sorted(speakers, key=lambda s: (gender[s], s))
    assign = {s: i % k for i, s in enumerate(ordered)}
    return [np.array([i for i, c in enumerate(clips) if assign[c.speaker] == f]) for f in range(k)]


def babble_groups(clips: Sequence[Clip], folds: int = 6) -> dict[str, list[str]]:
    """For each speaker, the speakers whose voices may be its training babble: the others of its
    own speaker-grouped fold (speaker_folds above). When a fold holds a speaker out,
    that speaker's clips are not trained on, and every other speaker's babble comes from their
    own fold: no held-out voice is ever heard in training, not even in the background."""
    ids = speaker_folds(clips, folds)
    group = {clips[int(i)].speaker: f for f, held in enumerate(ids) for i in held}
    return {s: sorted(o for o in group if o != s and group[o] == group[s]) for s in sorted(group)}


def _babble_table(
    clips: Sequence[Clip],
    condition: str,
    baseline: bool,
    seed: int,
    folds: int = 6,
    recipe: BabbleRecipe = BabbleRecipe(),
) -> Table:
    """A training copy heard in a busy room: lead-in, pause and turn as in the other training
    copies, at a random recording level over a random noise floor, with 1-4 other speakers
    (never a held-out one, see babble_groups) talking underneath all of it at 5-25 dB below the
    customer's calm voice. Each window also records how much of it is the customer's own
    speech, so training can tell background talk from the customer (Table.own_speech)."""
    leads = lead_ins(clips) if baseline else [None] * len(clips)
    groups = babble_groups(clips, folds)
    by_speaker: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_speaker.setdefault(c.speaker, []).append(i)
    cond_id = list(CONDITIONS).index(condition)
    parts: list[tuple[int, Windows, np.ndarray]] = []
    for i, c in enumerate(clips):
        rng = np.random.default_rng([seed, cond_id, i])
        g = float(rng.uniform(*recipe.gain_db))
        x = augment.gain(load_float(c.path), g)
        j = leads[i]
        lead = augment.gain(load_float(clips[j].path), g) if j is not None else None
        gap = float(rng.uniform(*PAUSE_S)) if lead is not None else 0.0
        whole = x.size + (lead.size + int(gap * RATE) if lead is not None else 0)
        floor = (
            augment.random_floor(whole, rng, *recipe.floor_db)
            if rng.random() < recipe.floor_p
            else np.zeros(whole, np.float32)
        )
        pool = [k for s in groups[c.speaker] for k in by_speaker[s]]
        ref = augment._active_power(lead if lead is not None else x)
        snr = float(rng.uniform(*recipe.snr_db))
        talkers = int(rng.integers(recipe.talkers[0], recipe.talkers[1] + 1))
        babble = np.zeros(whole, np.float32)
        for _ in range(talkers if pool else 0):
            track: list[np.ndarray] = [np.zeros(int(rng.uniform(0, 1.0) * RATE), np.float32)]
            got = track[0].size
            while got < whole:
                y = load_float(clips[pool[int(rng.integers(len(pool)))]].path)
                track.append(y)
                got += y.size
            babble += np.concatenate(track)[:whole]
        p_bab = float(np.mean(babble.astype(np.float64) ** 2) + 1e-12)
        babble *= np.float32(np.sqrt(ref / p_bab / 10 ** (snr / 10)))
        lead_pcm = to_pcm(lead) if lead is not None else None
        alone = extract(to_pcm(x), lead_pcm, gap, floor)
        busy = extract(to_pcm(x), lead_pcm, gap, floor + babble)
        parts.append((i, busy, alone.speech))
        if i % 200 == 199:
            log.info("  %s: %d/%d clips", condition, i + 1, len(clips))
    n_feat = max((w.features.shape[1] for _, w, _ in parts if w.features.size), default=0)
    return Table(
        np.concatenate([np.full(w.t.size, i) for i, w, _ in parts]).astype(np.int64),
        np.concatenate([w.t for _, w, _ in parts]),
        np.concatenate([w.speech for _, w, _ in parts]),
        np.concatenate([w.features.reshape(-1, n_feat) for _, w, _ in parts]).astype(np.float32),
        np.concatenate([b for _, _, b in parts]),
    )
