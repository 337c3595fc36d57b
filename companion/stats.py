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

CUES = ("slow_down", "empathize", "call_manager", "settled")


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
