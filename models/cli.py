"""`calmcue score` and `calmcue model ...` (argparse only; heavy imports inside the commands)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score audio files as the device would (one JSON line each)",
        description="Score wav/flac files (any sample rate) as the device would. Prints one JSON "
        'line per file: {"path", "score", "windows": [{"t", "score"}, ...]}; a file that cannot '
        'be read gives {"path", "error"} and the others are still scored.',
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--engine",
        choices=("onnxruntime", "micropython"),
        default="onnxruntime",
        help="onnxruntime = numpy front end + ONNX (Pi); micropython = firmware front end + "
        "nnrt in the MicroPython unix port (ESP32)",
    )
    p.set_defaults(func=_score)

    m = sub.add_parser("model", help="train, evaluate and export the stress model")
    msub = m.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    t = msub.add_parser("train", help="features, speaker-grouped folds, the shipped model")
    t.add_argument(
        "--data",
        default=None,
        help="training data: a manifest CSV (path,speaker,label[,gender]) or KIND:FOLDER with "
        "KIND one of ravdess, cremad, emodb, tess (default: the shared RAVDESS)",
    )
    t.add_argument("--false-cue-rate", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--babble-copies",
        type=int,
        default=None,
        help="training copies with other training speakers talking underneath at 5-25 dB "
        "below the customer (models/dataset.py _babble_table); default: the shipped recipe's "
        "(TrainSettings.babble_copies)",
    )
    t.set_defaults(func=_train)
    e = msub.add_parser("evaluate", help="held-out figures incl. levels, noise, gender held out")
    e.add_argument(
        "--no-anchor",
        action="store_true",
        help="skip the openSMILE eGeMAPS + logistic-regression anchor (it runs when opensmile "
        "is installed: pip install -e '.[bench]'; features are cached under var/)",
    )
    e.add_argument(
        "--conversations",
        action="store_true",
        help="the conversation benchmark instead: whole conversations built from RAVDESS, "
        "through features, the held-out fold models, attribution and the cue policy, under "
        "every recording condition; figures per condition against the targets "
        "(var/model/conversations.json, and the model card)",
    )
    e.add_argument(
        "--per-speaker", type=int, default=3, help="conversations of each kind per speaker"
    )
    e.add_argument(
        "--condition",
        action="append",
        default=None,
        help="only this condition (repeatable); default: all of them",
    )
    e.add_argument(
        "--engine",
        choices=("onnxruntime", "micropython", "both"),
        default="onnxruntime",
        help="both: onnxruntime for the figures, and a slice (--parity-slice per kind) replayed "
        "on the MicroPython unix port, cue timelines compared",
    )
    e.add_argument("--parity-slice", type=int, default=2)
    e.add_argument(
        "--trained",
        default=None,
        metavar="DIR",
        help="benchmark the fold models of a training run not yet exported (DIR/trained.pkl, "
        "e.g. var/model) instead of models/stress_folds.npz; figures go to "
        "DIR/conversations.json and the model card is left alone",
    )
    e.add_argument(
        "--records",
        default=None,
        metavar="DIR",
        help="keep the front end's window records of each condition's conversations in DIR "
        "(e.g. var/conversation-records) and replay them on later runs: model variants "
        "(--trained) are then benchmarked in seconds per condition on onnxruntime; the "
        "records are rebuilt when the front end, attribution or policy sources change",
    )
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_evaluate)
    x = msub.add_parser("export", help="write models/stress.onnx, stress.ccm, stress.json")
    x.set_defaults(func=_export)


def _score(args: argparse.Namespace) -> int:
    from models.scoring import ScoringError, score_files

    failed = 0
    try:
        for res in score_files(args.files, args.engine):
            failed += "error" in res
            print(json.dumps(res), flush=True)
    except ScoringError as exc:
        print(f"calmcue score: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _train(args: argparse.Namespace) -> int:
    from models.corpora import CorpusError
    from models.pipeline import run_train
    from models.train import TrainSettings

    extra = {} if args.babble_copies is None else {"babble_copies": args.babble_copies}
    try:
        run_train(
            args.data,
            TrainSettings(false_cue_rate=args.false_cue_rate, seed=args.seed, **extra),
        )
    except CorpusError as exc:
        print(f"calmcue model train: {exc}", file=sys.stderr)
        return 2
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from models.pipeline import run_evaluate

    if args.conversations:
        return _conversations(args)
    anchor = not args.no_anchor
    if anchor:
        try:
            import opensmile  # noqa: F401  (benchmark reference only)
        except ImportError:
            print("opensmile not installed: evaluating without the eGeMAPS anchor", file=sys.stderr)
            anchor = False
    try:
        run_evaluate(anchor=anchor)
    except FileNotFoundError as exc:
        print(f"calmcue model evaluate: {exc}", file=sys.stderr)
        return 2
    return 0


def _conversations(args: argparse.Namespace) -> int:
    import logging

    from models import conversations as cv

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [c for c in args.condition or () if c not in cv.CONDITIONS]
    if unknown:
        print(
            f"calmcue model evaluate: unknown condition {unknown[0]!r}; choose from "
            + ", ".join(cv.CONDITIONS),
            file=sys.stderr,
        )
        return 2
    from pathlib import Path

    from models.pipeline import load_trained

    try:
        if args.trained:
            trained = cv.HeldOutModels.from_trained(load_trained(Path(args.trained)))
        else:
            trained = cv.HeldOutModels.shipped()
    except FileNotFoundError as exc:
        print(f"calmcue model evaluate: {exc}", file=sys.stderr)
        return 2
    engines = ("onnxruntime", "micropython") if args.engine == "both" else (args.engine,)
    report = cv.run_benchmark(
        trained,
        args.condition or tuple(cv.CONDITIONS),
        per_speaker=args.per_speaker,
        seed=args.seed,
        engines=engines,
        parity_slice=args.parity_slice,
        progress=lambda line: print(line, flush=True),
        records=Path(args.records) if args.records else None,
    )
    if args.trained:
        cv.save_report(report, Path(args.trained) / "conversations.json", card=None)
    else:
        cv.save_report(report)
    missed = {k: v["misses"] for k, v in report["conditions"].items() if v["misses"]}
    print(
        f"{len(report['conditions']) - len(missed)}/{len(report['conditions'])} conditions meet every target"
    )
    for k, v in missed.items():
        print(f"  {k}: misses " + "; ".join(v))
    return 0


def _export(args: argparse.Namespace) -> int:
    from models.pipeline import run_export

    try:
        meta = run_export()
    except FileNotFoundError as exc:
        print(f"calmcue model export: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in meta.items() if k != "feature_order"}))
    return 0
