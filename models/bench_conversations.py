"""`make bench`: the conversation benchmark (models/conversations.py), every condition, on the
shipped fold models (models/stress_folds.npz), each speaker scored by the one that never heard
them; a slice of each condition replayed on the MicroPython
unix port and the cue timelines compared. Figures in var/model/conversations.json and the model
card."""

from __future__ import annotations

from models import conversations as cv


def main() -> dict:
    trained = cv.HeldOutModels.shipped()
    report = cv.run_benchmark(
        trained,
        tuple(cv.CONDITIONS),
        per_speaker=2,
        engines=("onnxruntime", "micropython"),
        parity_slice=2,
        progress=lambda line: print("   " + line, flush=True),
    )
    cv.save_report(report)
    return report


if __name__ == "__main__":
    main()
