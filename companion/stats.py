"""Dashboard statistics: today's cues by type, per hour and per counter, time to de-escalate,
weekly trend. Counts of groups smaller than `min_group_size` are suppressed (None), so no view
narrows down to a handful of conversations; nothing is per employee (events carry no staff
identity at all).

Times are the companion's local time; an event's time is its device timestamp when it has
one, else when the companion received it.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from companion.db import events
from firmware.core import cue_table

CUES = tuple(cue_table.names())


def _suppress(n: int, k: int) -> int | None:
    return n if n == 0 or n >= k else None


def _ttd(values: list[float], k: int) -> dict[str, Any]:
    if len(values) < k:
        return {"n": _suppress(len(values), k), "median_s": None, "p90_s": None}
    s = sorted(values)
    return {
        "n": len(s),
        "median_s": round(statistics.median(s), 1),
        "p90_s": round(s[min(len(s) - 1, int(0.9 * len(s)))], 1),
    }


def dashboard_stats(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    site: str | None = None,
    min_group_size: int,
    weeks: int = 8,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now()
    today = datetime.combine(now.date(), datetime.min.time())
    week0 = today - timedelta(days=today.weekday())  # Monday of this week
    start = week0 - timedelta(weeks=weeks - 1)
    t_start = start.timestamp()
    q = select(
        events.c.site, events.c.device, events.c.cue, events.c.ts, events.c.received_at,
        events.c.ttd_s,
    ).where(events.c.type == "cue", events.c.received_at >= t_start - 86400)  # fmt: skip
    if sites is not None:
        q = q.where(events.c.site.in_(sorted(sites)))
    if site is not None:
        q = q.where(events.c.site == site)
    k = min_group_size
    by_type: Counter[str] = Counter()
    per_hour = [0] * 24
    per_counter: Counter[str] = Counter()
    ttd_today: list[float] = []
    ttd_week: list[float] = []
    weekly: dict[date, Counter[str]] = {
        (week0 - timedelta(weeks=i)).date(): Counter() for i in range(weeks)
    }
    with engine.connect() as conn:
        for r in conn.execute(q):
            t = r.ts if r.ts is not None else r.received_at
            if t < t_start:
                continue
            when = datetime.fromtimestamp(t)
            monday = (when - timedelta(days=when.weekday())).date()
            if monday in weekly:
                weekly[monday][r.cue] += 1
            if r.cue == "settled" and r.ttd_s is not None and when >= week0:
                ttd_week.append(r.ttd_s)
            if when < today:
                continue
            by_type[r.cue] += 1
            per_hour[when.hour] += 1
            per_counter[f"{r.site}/{r.device}"] += 1
            if r.cue == "settled" and r.ttd_s is not None:
                ttd_today.append(r.ttd_s)
    return {
        "min_group_size": k,
        "today": {
            "date": now.date().isoformat(),
            "by_type": {c: _suppress(by_type[c], k) for c in CUES},
            "total": _suppress(sum(by_type.values()), k),
            "per_hour": [_suppress(n, k) for n in per_hour],
            "per_counter": {c: _suppress(n, k) for c, n in sorted(per_counter.items())},
            "time_to_deescalate": _ttd(ttd_today, k),
        },
        "this_week": {"time_to_deescalate": _ttd(ttd_week, k)},
        "weekly": [
            {
                "week": monday.isoformat(),
                "by_type": {c: _suppress(cnt[c], k) for c in CUES},
                "total": _suppress(sum(cnt.values()), k),
            }
            for monday, cnt in sorted(weekly.items())
        ],
    }


# ---- a chosen range: the dashboard's charts and the counts CSV ---------------------------------

MAX_RANGE_DAYS = 366


class RangeError(ValueError):
    """A date range that cannot be read; the message says what to send."""


def parse_range(start: str | None, end: str | None, *, today: date | None = None) -> tuple[date, date]:
    """`from`/`to` as ISO dates (YYYY-MM-DD, both included, the companion's local days); the
    default is the last 7 days up to today."""
    today = today or date.today()
    try:
        last = date.fromisoformat(end) if end else today
        first = date.fromisoformat(start) if start else last - timedelta(days=6)
    except ValueError:
        raise RangeError("from and to are dates like 2026-12-07") from None
    if first > last:
        raise RangeError(f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise RangeError(f"a range is at most {MAX_RANGE_DAYS} days")
    return first, last


def _counts(c: Counter[str], k: int) -> dict[str, Any]:
    return {"by_type": {x: _suppress(c[x], k) for x in CUES}, "total": _suppress(sum(c.values()), k)}


def _cues_in_range(
    first: date, last: date, sites: frozenset[str] | None, site: str | None, *extra: Any
) -> tuple[float, float, Any]:
    """Local-day bounds t0..t1 of `first`..`last`, and the query for the cues a viewer of `sites`
    (None: all) may count there, optionally one `site`: a day wider on each side by arrival,
    since a cue's own `ts` (kept when known) decides its day."""
    t0 = datetime.combine(first, datetime.min.time()).timestamp()
    t1 = datetime.combine(last + timedelta(days=1), datetime.min.time()).timestamp()
    q = select(
        events.c.site, events.c.device, events.c.cue, events.c.ts, events.c.received_at, *extra
    ).where(
        events.c.type == "cue",
        events.c.received_at >= t0 - 86400,
        events.c.received_at < t1 + 86400,
    )
    if sites is not None:
        q = q.where(events.c.site.in_(sorted(sites)))
    if site is not None:
        q = q.where(events.c.site == site)
    return t0, t1, q


def range_stats(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    site: str | None = None,
    first: date,
    last: date,
    min_group_size: int,
) -> dict[str, Any]:
    """Cues from `first` to `last` (local days, both included): by type, by hour of the day,
    by counter (with the store's name) and by day with the day's time to de-escalate (median,
    p90), every count below `min_group_size` suppressed (None) — docs/privacy.md."""
    from companion.db import sites as sites_table

    k = min_group_size
    t0, t1, q = _cues_in_range(first, last, sites, site, events.c.ttd_s)
    total: Counter[str] = Counter()
    per_hour = [Counter[str]() for _ in range(24)]
    per_counter: dict[tuple[str, str], Counter[str]] = {}
    n_days = (last - first).days + 1
    per_day = {first + timedelta(days=i): Counter[str]() for i in range(n_days)}
    ttd_day: dict[date, list[float]] = {d: [] for d in per_day}
    ttd_all: list[float] = []
    with engine.connect() as conn:
        names = {r.site: r.name for r in conn.execute(select(sites_table.c.site, sites_table.c.name))}
        for r in conn.execute(q):
            t = r.ts if r.ts is not None else r.received_at
            if not t0 <= t < t1:
                continue
            when = datetime.fromtimestamp(t)
            total[r.cue] += 1
            per_hour[when.hour][r.cue] += 1
            per_counter.setdefault((r.site, r.device), Counter())[r.cue] += 1
            per_day[when.date()][r.cue] += 1
            if r.cue == "settled" and r.ttd_s is not None:
                ttd_day[when.date()].append(r.ttd_s)
                ttd_all.append(r.ttd_s)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "site": site,
        "min_group_size": k,
        **_counts(total, k),
        "per_hour": [{"hour": h, **_counts(c, k)} for h, c in enumerate(per_hour)],
        "per_counter": [
            {"site": s, "site_name": names.get(s), "device": d, **_counts(c, k)}
            for (s, d), c in sorted(per_counter.items())
        ],
        "days": [
            {"date": d.isoformat(), **_counts(c, k), "time_to_deescalate": _ttd(ttd_day[d], k)}
            for d, c in sorted(per_day.items())
        ],
        "time_to_deescalate": _ttd(ttd_all, k),
    }


def counts_csv_rows(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    site: str | None,
    first: date,
    last: date,
    min_group_size: int,
    by: str = "day",
) -> list[list[Any]]:
    """The counts CSV: one row per period (ISO 8601 day, or hour with its UTC offset), site,
    counter and cue; a count below `min_group_size` is left empty and the row says so."""
    from companion.db import sites as sites_table

    k = min_group_size
    t0, t1, q = _cues_in_range(first, last, sites, site)
    groups: Counter[tuple[str, str, str, str]] = Counter()
    with engine.connect() as conn:
        names = {r.site: r.name for r in conn.execute(select(sites_table.c.site, sites_table.c.name))}
        for r in conn.execute(q):
            t = r.ts if r.ts is not None else r.received_at
            if not t0 <= t < t1:
                continue
            when = datetime.fromtimestamp(t).astimezone()
            period = (
                when.date().isoformat()
                if by == "day"
                else when.replace(minute=0, second=0, microsecond=0).isoformat()
            )
            groups[(period, r.site, r.device, r.cue)] += 1
    rows: list[list[Any]] = [["period", "site", "store", "counter", "cue", "cues", "note"]]
    for (period, s, d, c), n in sorted(groups.items()):
        shown = _suppress(n, k)
        rows.append(
            [period, s, names.get(s) or "", d, c, "" if shown is None else shown,
             f"fewer than {k}" if shown is None else ""]
        )  # fmt: skip
    return rows
