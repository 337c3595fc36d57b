"""Run the companion: `serve(settings)` blocks (the CLI); `start(settings)` runs it on a
background thread and returns a handle (the demo, tests, benchmarks)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from calmcue.shared.broker import Mosquitto, authenticated, free_port
from companion.app import create_app
from companion.config import Settings, SettingsError
from companion.ingest import Ingest

log = logging.getLogger("calmcue.companion")


def embedded_broker_dir(settings: Settings) -> Path:
    """Where the embedded broker persists sessions and queued messages: next to the SQLite
    file, else var/mqtt (absolute, from the working directory at start)."""
    if settings.db_url.startswith("sqlite:///") and ":memory:" not in settings.db_url:
        return Path(settings.db_url.split("///", 1)[1]).resolve().parent / "mqtt"
    return Path("var/mqtt").resolve()


def _resolve_embedded(settings: Settings) -> tuple[Settings, Mosquitto | None]:
    """`mqtt_url="embedded"` starts a private Mosquitto on a free port for this process. It
    is durable (persistence on, queue sized for a 10-minute companion outage:
    calmcue.shared.broker.durable_conf, stored next to the SQLite file) and refuses anonymous
    clients: the companion gets a generated account, and the devices the
    fleet registry has accounts for (`calmcue device register`) their own, with per-device
    rules, as they were when the companion started."""
    if settings.mqtt_url != "embedded":
        return settings, None
    broker, creds = authenticated(
        extra_accounts=_fleet_accounts(settings), workdir=embedded_broker_dir(settings)
    )
    broker.start()
    log.info("embedded MQTT broker on %s (password accounts only)", broker.url)
    return settings.model_copy(update={"mqtt_url": creds.url("companion")}), broker


def _fleet_accounts(settings: Settings) -> list[Any]:
    try:
        from companion.db import make_engine
        from companion.fleet import FleetStore
    except ImportError:
        return []
    from sqlalchemy import inspect

    engine = make_engine(settings.db_url)
    try:
        if not inspect(engine).has_table("fleet_mqtt_accounts"):
            return []
        return FleetStore(engine, key_path=settings.fleet_key_path).accounts()
    finally:
        engine.dispose()


class _Server(uvicorn.Server):
    """Ends the dashboards' live feeds first on shutdown: uvicorn waits for open requests before
    the app's lifespan ends, and a live feed never finishes on its own."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        _close_feed(self)
        super().handle_exit(sig, frame)


def _close_feed(server: uvicorn.Server) -> None:
    feed = getattr(server.config.app.state, "feed", None)  # type: ignore[union-attr]
    if feed is not None:
        feed.close()


def _config(settings: Settings) -> uvicorn.Config:
    if bool(settings.tls_certfile) != bool(settings.tls_keyfile):
        raise SettingsError("HTTPS needs both CALMCUE_TLS_CERTFILE and CALMCUE_TLS_KEYFILE (PEM)")
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,  # live feeds are long requests; do not wait on them
        lifespan="on",
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )


def serve(settings: Settings) -> None:
    """Serve the API and dashboard on settings.host:port until interrupted."""
    settings, broker = _resolve_embedded(settings)
    try:
        log.info("dashboard on %s://%s:%d/", "https" if settings.tls_certfile else "http",
                 settings.host, settings.port)
        _Server(_config(settings)).run()
    finally:
        if broker:
            broker.close()


@dataclass
class RunningCompanion:
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    broker: Mosquitto | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_certfile else "http"
        return f"{scheme}://{self.settings.host}:{self.settings.port}"

    @property
    def app(self) -> FastAPI:
        return self.server.config.app  # type: ignore[return-value]

    @property
    def engine(self) -> Engine:
        return self.app.state.engine  # type: ignore[no-any-return]

    @property
    def ingest(self) -> Ingest:
        return self.app.state.ingest  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        _close_feed(self.server)
        self.server.should_exit = True
        self.thread.join(15)
        if self.broker:
            self.broker.close()


def start(settings: Settings, timeout: float = 20.0) -> RunningCompanion:
    """Start on a background thread and return once it answers (port 0 picks a free port)."""
    if settings.port == 0:
        settings = settings.model_copy(update={"port": free_port()})
    settings, broker = _resolve_embedded(settings)
    server = _Server(_config(settings))
    thread = threading.Thread(target=server.run, name="calmcue-companion", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            if broker:
                broker.close()
            raise RuntimeError(
                f"the companion did not start on {settings.host}:{settings.port}; see the log above"
            )
        time.sleep(0.02)
    return RunningCompanion(settings=settings, server=server, thread=thread, broker=broker)
