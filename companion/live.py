"""Live feed: the writer thread hands over stored events; every open dashboard (Server-Sent
Events) gets its own asyncio queue, filtered to the sites its viewer may see."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

KEEPALIVE_S = 15.0
QUEUE_MAX = 2000  # a dashboard this far behind gets a "resync" instead of every event


class LiveFeed:
    def __init__(self) -> None:
        self._subs: set[
            tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, Any]], frozenset[str] | None]
        ] = set()
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def publish(self, kind: str, items: list[dict[str, Any]]) -> None:
        """Thread-safe: called from the ingest writer or the alert manager."""
        with self._lock:
            subs = list(self._subs)
        for loop, q, sites in subs:
            mine = items if sites is None else [i for i in items if i.get("site") in sites]
            if mine:
                try:
                    loop.call_soon_threadsafe(_offer, q, (kind, mine))
                except RuntimeError:  # that loop has closed
                    pass

    async def stream(
        self, sites: frozenset[str] | None, is_disconnected: Any, *, events: bool = True
    ) -> AsyncIterator[str]:
        """`events=False` leaves out single stored events (a manager's feed: alerts only)."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_MAX)
        sub = (loop, q, sites)
        with self._lock:
            self._subs.add(sub)
        try:
            yield "retry: 1000\n\n"
            while not self.closed.is_set():
                try:
                    kind, items = await asyncio.wait_for(q.get(), timeout=0.5)
                except TimeoutError:
                    if await is_disconnected():
                        break
                    continue
                if kind == "event" and not events:
                    continue
                for item in items:
                    yield f"event: {kind}\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"
        finally:
            with self._lock:
                self._subs.discard(sub)

    def close(self) -> None:
        self.closed.set()


def _offer(q: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]) -> None:
    try:
        q.put_nowait(item)
    except asyncio.QueueFull:
        while not q.empty():
            q.get_nowait()
        q.put_nowait(("resync", [{}]))
