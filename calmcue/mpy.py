"""The old import path of calmcue.shared.mpy, kept for the tests and firmware/host/bench_policy.py;
the project's own packages import calmcue.shared.mpy (tests/test_import_graph.py)."""

from calmcue.shared.mpy import REPO, MicroPythonError, interpreter, run

__all__ = ["REPO", "MicroPythonError", "interpreter", "run"]
