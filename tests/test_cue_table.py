"""One cue table (firmware/core/cue_table.py): every consumer reads it, and no other file writes the
cue list out again. docs/policy.md "Adding a cue" names the files a new cue touches."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from fastapi.testclient import TestClient

from companion import stats
from companion.app import create_app
from companion.config import Settings
from companion.schema import CueEvent, EventRejected, parse_event
from firmware.core import cue_table, events
from firmware.pi import outputs as pi_outputs

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "firmware" / "core" / "cue_table.py"
NAMES = cue_table.names()
# Where the product's code lives (tests may name cues one at a time, as data; docs are prose).
CODE = ("calmcue", "companion", "firmware", "models")


def _sources(top: tuple[str, ...], suffix: str) -> list[Path]:
    return [p for d in top for p in sorted((ROOT / d).rglob("*" + suffix)) if p != TABLE]


def _literal_lists(path: Path) -> list[tuple[int, list[str]]]:
    """(line, cue names) of every tuple, list, set or dict literal in a Python file that names
    two cues or more, and of every string constant (not a docstring) that does."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:  # fmt: skip
            named = [n for n in NAMES if re.search(rf"\b{n}\b", node.value)]
            if len(named) >= 2:
                found.append((node.lineno, named))
            continue
        else:
            continue
        named = [e.value for e in items if isinstance(e, ast.Constant) and e.value in NAMES]
        if len(set(named)) >= 2:
            found.append((node.lineno, named))
    return found


def test_no_cue_list_is_written_out_outside_the_table():
    """A list of cue names anywhere in the product's code (a tuple, a Literal, a schema string,
    a dict keyed by cue) would be one more place to edit for a new cue, and one more place to
    forget: they all read firmware/core/cue_table.py. The tests may not write out the whole list
    either; the dashboard's files name no cue at all (they get the table from /api/cues)."""
    bad = [f"{p.relative_to(ROOT)}:{line} {names}"
           for p in _sources(CODE, ".py") for line, names in _literal_lists(p)]  # fmt: skip
    bad += [f"{p.relative_to(ROOT)}:{line} all cues"
            for p in _sources(("tests",), ".py") for line, names in _literal_lists(p)
            if set(names) == set(NAMES)]  # fmt: skip
    for suffix in (".js", ".css", ".html"):
        for p in _sources(("companion",), suffix):
            for i, text in enumerate(p.read_text().splitlines(), 1):
                named = [n for n in NAMES if re.search(rf"\b{n}\b", text)]
                if named:
                    bad.append(f"{p.relative_to(ROOT)}:{i} {named}")
    assert bad == [], "cue names written out outside firmware/core/cue_table.py:\n" + "\n".join(bad)


def test_the_check_finds_a_written_out_list(tmp_path):
    f = tmp_path / "x.py"
    f.write_text(
        f'"""{" ".join(NAMES)} in a docstring is prose."""\n'
        f"CUES = {tuple(NAMES[:2])!r}\n"
        f"SCHEMA = {'|'.join(NAMES)!r}\n"
        f"ONE = {NAMES[0]!r}\n"
    )
    assert [line for line, _ in _literal_lists(f)] == [2, 3]


def test_the_table_is_well_formed():
    rows = [*cue_table.rows(), *cue_table.rows(signals=True), *pi_outputs.PI_SIGNALS]
    assert len({r[0] for r in rows}) == len(rows)  # no name twice
    for row in rows:
        assert len(row) == 13
        name, level, colour, *led, pct, on, off, n, repeat_ms, label = row
        assert re.fullmatch(r"[a-z][a-z_]{0,31}", name) and label
        assert (1 <= level <= cue_table.ALERT_LEVEL) if row in cue_table.rows() else level == 0
        assert 0 <= colour <= 0xFFFFFF
        assert 0 < led[0] <= 100 and led[1] > 0 and led[2] >= 0 and led[3] >= 1  # it lights
        assert (pct, on, off, n) == (0, 0, 0, 0) or (0 < pct <= 100 and on > 0 and n >= 1)
        passes = max(led[3] * (led[1] + led[2]), n * (on + off))
        assert repeat_ms == 0 or repeat_ms >= passes
    # The top level alerts the manager: a cue above it would not be an event the schema takes.
    assert max(r[1] for r in cue_table.rows()) == cue_table.ALERT_LEVEL
    # Cues escalate in order (PRODUCT.md): slow down, empathize, then the manager.
    level = cue_table.level
    assert level("slow_down") < level("empathize") < level("call_manager") == cue_table.ALERT_LEVEL
    # The cues look and feel different from each other, on both devices.
    looks = {r[2:11] for r in cue_table.rows()}
    assert len(looks) == len(cue_table.rows())


def test_every_consumer_reads_the_table():
    # the event schema, both sides
    cue = events.fields("cue")
    i = cue.index("cue")  # name, required, kind, limits
    assert cue[i + 2] == "str" and list(cue[i + 3]) == NAMES
    assert CueEvent.model_json_schema()["properties"]["cue"]["enum"] == NAMES
    event = {"v": 1, "type": "cue", "site": "s", "device": "d", "boot": 1, "seq": 0,
             "up_ms": 0, "conv": "0badc0de", "cue": NAMES[-1], "level": 1, "score": 0.5,
             "conv_s": 1.0}  # fmt: skip
    assert events.problems(event) == []
    assert parse_event(events.encode(event)).cue == NAMES[-1]
    event["cue"] = "dance"
    assert events.problems(event) == ["cue must be one of " + ", ".join(NAMES)]
    try:
        parse_event(events.encode(event, checked=True))
    except EventRejected:
        pass
    else:
        raise AssertionError("the companion accepted a cue the table does not have")
    # the companion's statistics count each cue of the table
    assert list(stats.CUES) == NAMES
    # the Pi agent plays the table's patterns, in the table's colours
    for row in cue_table.rows() + cue_table.rows(signals=True):
        name, _, c, _, _, _, times, *_, repeat_ms, _ = row
        p = pi_outputs.PATTERNS[name]
        assert p.color == ((c >> 16) / 255, (c >> 8 & 255) / 255, (c & 255) / 255)
        assert sum(1 for lv, _ in p.led if lv > 0) == times and p.repeat == bool(repeat_ms)
    assert pi_outputs.CUES == set(NAMES)


def test_the_dashboard_gets_the_table_from_the_api(tmp_path):
    app = create_app(Settings(env="demo", db_url=f"sqlite:///{tmp_path / 'c.db'}", mqtt_url=None,
                              data_dir=tmp_path))  # fmt: skip
    with TestClient(app) as http:
        got = http.get("/api/cues").json()
    assert [c["name"] for c in got] == NAMES
    assert [c["level"] for c in got] == [cue_table.level(n) for n in NAMES]
    assert [c["label"] for c in got] == [r[-1] for r in cue_table.rows()]
    assert [c["name"] for c in got if c["alert"]] == [
        n for n in NAMES if cue_table.level(n) >= cue_table.ALERT_LEVEL
    ]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c["colour"]) for c in got)
    js = (ROOT / "companion" / "static" / "manager.js").read_text()
    assert 'getJSON("/api/cues")' in js
