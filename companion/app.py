"""The companion web service: builds the app around the HTTP API (companion/api: one router per
area in api/routes, shared dependencies in api/deps.py), the fleet's routers, the dashboard's
files, and the MQTT ingest, alert watcher and purger in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from companion import alerts as alerts_mod
from companion import fleet_view, ops, replicas, users
from companion.alerts import AlertManager
from companion.api.deps import (
    AUTH,
    BODY,
    STATIC,
    add_security_middleware,
    errors,
    require_fleet,
)
from companion.api.main import api_router
from companion.config import Settings
from companion.db import make_engine, migrate
from companion.ingest import Ingest
from companion.live import LiveFeed
from companion.push import Pusher

log = logging.getLogger("calmcue.companion")


def _fleet_module() -> Any:
    """IT's fleet API (inventory, MQTT accounts, signed updates; docs/fleet.md), mounted when
    its module is part of this build."""
    try:
        from companion import fleet
    except ImportError:
        return None
    return fleet


def make_ingest(settings: Settings, engine: Engine) -> Ingest:
    """MQTT subscriptions on one broker, or the clustered broker's shared durable queue."""
    if settings.amqp_urls:
        from companion.cluster_ingest import ClusterIngest

        return ClusterIngest(settings, engine)
    return Ingest(settings, engine)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. The lifespan migrates the database, starts the MQTT ingest (when
    `settings.mqtt_url` names a broker) and the alert watcher, and stops them on shutdown."""
    settings = settings or Settings()
    if settings.mqtt_url == "embedded":
        raise ValueError(
            "mqtt_url 'embedded' is resolved by companion.server.serve(); pass a URL here"
        )

    engine = make_engine(settings.db_url)  # connects lazily; the lifespan migrates it
    fleet = _fleet_module()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(engine)  # every table, the fleet's included
        if settings.admin_password and users.count_users(engine) == 0:
            users.create_user(
                engine, username=settings.admin_user, password=settings.admin_password, role="admin"
            )
            log.info("created the first admin user %r", settings.admin_user)
        elif not settings.open_access and users.count_users(engine) == 0:
            log.warning(
                "no users yet, so nobody can log in: add one with "
                "'calmcue companion user add NAME --role admin' (or set CALMCUE_ADMIN_PASSWORD)"
            )
        feed = LiveFeed()
        ingest = make_ingest(settings, engine)
        shared = settings.replicated
        pusher = Pusher(engine, settings.data_dir, settings.push_subject)  # Web Push
        app.state.pusher = pusher

        def notify(kind: str, items: list[dict[str, Any]]) -> None:
            feed.publish(kind, items)
            pusher.on_alerts(kind, items)

        manager = AlertManager(
            settings,
            engine,
            publish=ingest.publish_alert,
            notify=notify,
            replica=ingest.replica if shared else None,
        )
        relay = replicas.FeedRelay(engine, ingest.replica, feed) if shared else None
        ingest.on_events(lambda rows: feed.publish("event", rows))
        ingest.in_commit(manager.open_with_events)  # an event commits with its alert
        ingest.handle(alerts_mod.ACK_TOPIC_FILTER, manager.on_mqtt)
        ingest.handle(fleet_view.RESULT_TOPIC_FILTER, app.state.config_results.on_mqtt)
        app.state.feed = feed
        app.state.ingest = ingest
        app.state.alerts = manager
        purger = ops.Purger(engine, settings.retention_days, settings.purge_interval_s)
        app.state.purger = purger
        if relay is not None:
            relay.start()
        ingest.start()
        pusher.start()
        manager.start()
        purger.start()
        log.info(
            "companion ready (%s mode) on database %s", settings.env, engine.url.render_as_string()
        )
        try:
            yield
        finally:
            feed.close()
            if relay is not None:
                relay.stop()
            purger.stop()
            manager.stop()
            pusher.stop()
            ingest.stop()
            engine.dispose()

    app = FastAPI(
        title="calmcue companion",
        version="1",
        summary="Cue events, manager alerts and device health from calmcue counter devices.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: a store may have no internet
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.resolve_principal = users.resolve_principal
    app.state.config_results = fleet_view.ConfigResults()  # devices' answers to their config
    if fleet is not None:
        # an absolute path under data_dir (config.py), never relative to the working directory
        fleet_store = fleet.FleetStore(engine, key_path=settings.fleet_key_path)
        app.state.fleet_store = fleet_store  # the IT screens' roll-out view reads it
        app.include_router(
            fleet.it_router(fleet_store),
            dependencies=[Depends(require_fleet)],
            responses=errors(*AUTH, 404, 409, *BODY),
        )
        app.include_router(fleet.device_router(fleet_store), responses=errors(401, 403, 404, 409, *BODY))
    add_security_middleware(app, settings)
    app.include_router(api_router)

    # ---- dashboard -------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    _mount_offline_docs(app)  # before /static, which would otherwise take /static/swagger
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _mount_offline_docs(app: FastAPI) -> None:
    """Swagger UI 5 at /docs from the swagger-ui-bundle-v2 package, not a CDN."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="calmcue companion API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )
