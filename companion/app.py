"""The companion web service: REST API, live dashboard, and the MQTT ingest in its lifespan."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine, text
from starlette.middleware.sessions import SessionMiddleware

from companion import alerts as alerts_mod
from companion import device_config, ops, replicas, stats, store, users
from companion.alerts import AlertError, AlertManager
from companion.auth import Principal, current_principal
from companion.config import Settings
from companion.db import make_engine, migrate
from companion.ingest import Ingest
from companion.live import LiveFeed
from companion.web_security import SecurityMiddleware

log = logging.getLogger("calmcue.companion")
STATIC = Path(__file__).resolve().parent / "static"


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def alert_manager(request: Request) -> AlertManager:
    return request.app.state.alerts  # type: ignore[no-any-return]


Viewer = Annotated[Principal, Depends(current_principal)]
Db = Annotated[Engine, Depends(engine_of)]
Alerts = Annotated[AlertManager, Depends(alert_manager)]
Limit = Annotated[int, Query(ge=1, le=1000)]
# bounds the database takes (SQLite and PostgreSQL integers are 64-bit at most)
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
AlertId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


class ErrorOut(BaseModel):
    """Every error answer: `detail` says what to change (a list of field errors for 422s)."""

    detail: str | list[dict[str, Any]]


_ERROR_TEXT = {
    400: "The body is not JSON (or not a form) at all, or the request is not possible here",
    401: "Not logged in: log in at /login or send 'Authorization: Bearer <token>'",
    403: "Logged in, but this needs another role or site",
    404: "Not found (or not at a site you may see)",
    409: "Not possible in the current state",
    422: "The request does not validate; `detail` says which field and why",
    503: "The database does not answer",
}


def errors(*codes: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the error answers a route can give. Errors are JSON even on a
    route whose answer is not (`json_route=False`: CSV, Prometheus text, redirects)."""
    if json_route:
        return {c: {"model": ErrorOut, "description": _ERROR_TEXT[c]} for c in codes}
    ref = {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
    return {c: {"description": _ERROR_TEXT[c], "content": {"application/json": ref}} for c in codes}


AUTH = (401, 403)
BODY = (400, 422)  # a body that is not JSON at all is a 400 (FastAPI), one off the model a 422


class CsvResponse(StreamingResponse):
    media_type = "text/csv"


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def optional_principal(request: Request) -> Principal | None:
    try:
        return current_principal(request)
    except HTTPException:
        return None


Maybe = Annotated[Principal | None, Depends(optional_principal)]


def require(who: Principal, *roles: str) -> None:
    if who.role not in roles and who.role != "demo":
        raise HTTPException(403, f"this needs one of the roles: {', '.join(roles)}")


def require_site(who: Principal, site: str) -> None:
    if not who.may_see(site):
        raise HTTPException(403, f"you may not read site {site!r}")


def require_it(who: Viewer) -> Principal:
    require(who, "admin", "it")
    return who


def refuse_demo(who: Principal, what: str) -> None:
    """Demo mode is anonymous: read-only for anything outside the demo itself."""
    if who.role == "demo":
        raise HTTPException(
            403,
            f"demo mode is read-only outside the demo: {what} needs a real login "
            "(start the companion with --env development or production)",
        )


def require_fleet(who: Viewer) -> Principal:
    """The fleet API (accounts, signing key, signed updates) is never open in demo mode."""
    refuse_demo(who, "the fleet API (MQTT accounts, update signing, keys)")
    require(who, "admin", "it")
    return who


def _fleet_module() -> Any:
    """IT's fleet API (inventory, MQTT accounts, signed updates; docs/fleet.md), mounted when
    its module is part of this build."""
    try:
        from companion import fleet
    except ImportError:
        return None
    return fleet


class UserCreate(BaseModel):
    username: str
    password: str
    role: str
    sites: list[str] = Field(default_factory=list)


class DeviceCreate(BaseModel):
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    device: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")

    @field_validator("device")
    @classmethod
    def _not_a_topic_word(cls, v: str) -> str:
        from calmcue.shared.broker_access import RESERVED_DEVICE_IDS

        if v in RESERVED_DEVICE_IDS:
            raise ValueError(f"device id {v!r} is a reserved topic word; choose another")
        return v


class TokenCreate(BaseModel):
    name: str = "api"


class SiteUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=128)
    first_contact: str | None = Field(default=None, max_length=128)
    second_contact: str | None = Field(default=None, max_length=128)


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
        ingest = Ingest(settings, engine)
        shared = settings.mqtt_shared_group is not None
        manager = AlertManager(
            settings,
            engine,
            publish=ingest.publish,
            notify=feed.publish,
            replica=ingest.replica if shared else None,
        )
        relay = replicas.FeedRelay(engine, ingest.replica, feed) if shared else None
        ingest.on_events(lambda rows: feed.publish("event", rows))
        ingest.on_events(manager.on_events)
        ingest.handle(alerts_mod.ACK_TOPIC_FILTER, manager.on_mqtt)
        app.state.feed = feed
        app.state.ingest = ingest
        app.state.alerts = manager
        purger = ops.Purger(engine, settings.retention_days, settings.purge_interval_s)
        app.state.purger = purger
        if relay is not None:
            relay.start()
        ingest.start()
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
    if fleet is not None:
        # an absolute path under data_dir (config.py), never relative to the working directory
        fleet_store = fleet.FleetStore(engine, key_path=settings.fleet_key_path)
        app.include_router(
            fleet.it_router(fleet_store),
            dependencies=[Depends(require_fleet)],
            responses=errors(*AUTH, 404, 409, *BODY),
        )
        app.include_router(fleet.device_router(fleet_store), responses=errors(401, 403, 404, 409, *BODY))
    # order matters: added first = runs inside the session middleware and sees the session
    app.add_middleware(SecurityMiddleware, hsts=settings.env == "production")
    app.add_middleware(
        SessionMiddleware,
        # signs the cookie, which carries only a random session id and the CSRF token; the
        # session itself is server-side (users.create_session), so logout revokes it
        secret_key=settings.session_secret(),
        session_cookie="calmcue_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.env == "production",
    )

    # ---- ops -------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"], responses=errors(503))
    def healthz(request: Request, db: Db, who: Maybe) -> Any:
        """`{"status": "ok"}` when the database answers; IT and admins (and demo mode) also
        get the MQTT connection and the ingest counters."""
        try:
            with db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"detail": "the database does not answer"}, status_code=503)
        if who is None or who.role not in ("admin", "it", "demo"):
            return {"status": "ok"}
        counters = request.app.state.ingest.counters()
        return {
            "status": "ok",
            "env": settings.env,
            "mqtt_connected": counters.connected,
            "ingest": asdict(counters),
        }

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses=errors(*AUTH, json_route=False),
    )
    def metrics(request: Request, who: Viewer, db: Db) -> PlainTextResponse:
        """Prometheus text format (scrape with an IT or admin bearer token)."""
        require(who, "admin", "it")
        body = ops.metrics_text(db, request.app.state.ingest.counters(), request.app.state.purger)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/ingest", tags=["ops"], responses=errors(401))
    def get_ingest(request: Request, who: Viewer) -> dict[str, Any]:
        """Ingest counters: received, stored, duplicates, dead-lettered, queue depth, and per
        site. A manager sees only the per-site counters of their own sites."""
        ingest: Ingest = request.app.state.ingest
        if who.role in ("admin", "it", "demo"):
            return {**asdict(ingest.counters()), "sites": ingest.site_counters()}
        return {"sites": ingest.site_counters(who.sites or frozenset())}

    # ---- login -----------------------------------------------------------------------------

    @app.get("/login", include_in_schema=False)
    def login_page() -> FileResponse:
        return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-cache"})

    @app.post(
        "/api/login",
        tags=["auth"],
        status_code=303,
        response_class=RedirectResponse,
        responses={
            303: {"description": "To the dashboard, or back to /login?failed=1"},
            **errors(*BODY, json_route=False),
        },
    )
    def login(
        request: Request,
        db: Db,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> Any:
        """Dashboard login (form post); sets the session cookie and goes to the dashboard.
        After `login_max_failures` failures for a username or a client address within
        `login_window_s`, answers 429 with Retry-After until the window has passed."""
        keys = users.lockout_keys(username, request.client.host if request.client else None)
        wait = users.locked_for(db, keys, settings.login_max_failures, settings.login_window_s)
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            log.warning("login for %r locked for %d s after repeated failures", username, retry)
            return JSONResponse(
                {"detail": f"too many failed logins; try again in {retry} s"},
                status_code=429,
                headers={"Retry-After": str(retry)},
            )
        who = users.authenticate(db, username, password)
        if who is None:
            users.record_failure(db, keys, settings.login_window_s)
            return RedirectResponse("/login?failed=1", status_code=303)
        users.clear_failures(db, keys[0])
        old = request.session.get("sid")
        if isinstance(old, str):
            users.end_session(db, old)
        request.session.clear()
        request.session["sid"] = users.create_session(
            db, who.username, settings.session_max_age_s
        )
        request.session["csrf"] = secrets.token_urlsafe(32)
        return RedirectResponse("/", status_code=303)

    @app.post(
        "/api/logout",
        tags=["auth"],
        status_code=303,
        response_class=RedirectResponse,
        responses={303: {"description": "To /login"}, **errors(403)},
    )
    def logout(request: Request, db: Db) -> RedirectResponse:
        """Ends the session on the server: the cookie is worthless afterwards, even if kept."""
        sid = request.session.get("sid")
        if isinstance(sid, str):
            users.end_session(db, sid)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/api/session", tags=["auth"])
    def session_info(request: Request) -> dict[str, Any]:
        if settings.open_access:
            return {"mode": "demo", "user": None, "role": "demo", "sites": None}
        try:
            who = current_principal(request)
        except HTTPException:
            return {"mode": settings.env, "user": None, "role": None, "sites": []}
        return {
            "mode": settings.env,
            "user": who.username,
            "role": who.role,
            "sites": None if who.sites is None else sorted(who.sites),
            # send back as X-CSRF-Token on POST/PUT/PATCH/DELETE (companion/web_security.py)
            "csrf": request.session.get("csrf"),
        }

    @app.post("/api/tokens", tags=["auth"], responses=errors(400, 401, 422))
    def new_token(who: Viewer, db: Db, body: TokenCreate) -> dict[str, str]:
        """A new bearer token for the caller (shown once): `Authorization: Bearer <token>`."""
        refuse_demo(who, "creating API tokens")
        return {"token": users.create_token(db, who.username, body.name)}

    @app.get("/api/tokens", tags=["auth"], responses=errors(*AUTH, 422))
    def get_tokens(who: Viewer, db: Db, all: bool = False) -> list[dict[str, Any]]:
        """The caller's API tokens (id, name, created; never the token); an admin may ask for
        everyone's with `all=true`."""
        refuse_demo(who, "API tokens")
        if all:
            require(who, "admin")
        return users.list_tokens(db, None if all else who.username)

    @app.delete("/api/tokens/{token_id}", tags=["auth"], responses=errors(*AUTH, 404, 422))
    def delete_token(
        who: Viewer, db: Db, token_id: Annotated[int, PathParam(ge=1, le=2**62)]
    ) -> dict[str, Any]:
        """Revoke a token at once: one's own, or anyone's for an admin."""
        refuse_demo(who, "API tokens")
        owner = None if who.role == "admin" else who.username
        if not users.revoke_token(db, token_id, owner):
            raise HTTPException(404, f"no token {token_id} you may revoke")
        return {"revoked": token_id}

    @app.get("/api/users", tags=["auth"], responses=errors(*AUTH))
    def get_users(who: Viewer, db: Db) -> list[dict[str, Any]]:
        refuse_demo(who, "the user list")
        require(who, "admin")
        return users.list_users(db)

    @app.post("/api/users", tags=["auth"], status_code=201, responses=errors(*AUTH, *BODY))
    def post_user(who: Viewer, db: Db, body: UserCreate) -> dict[str, Any]:
        refuse_demo(who, "creating users")
        require(who, "admin")
        try:
            p = users.create_user(
                db, username=body.username, password=body.password, role=body.role, sites=body.sites
            )
        except users.UserError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"username": p.username, "role": p.role, "sites": sorted(p.sites or [])}

    # ---- events ----------------------------------------------------------------------------

    @app.get("/api/events", tags=["events"], responses=errors(*AUTH, 422))
    def get_events(
        who: Viewer,
        db: Db,
        limit: Limit = 100,
        offset: Offset = 0,
        site: str | None = None,
        device: str | None = None,
        type: str | None = None,
        cue: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events, newest first (only the sites the caller may read)."""
        if site is not None:
            require_site(who, site)
        return store.list_events(
            db,
            sites=who.sites,
            site=site,
            device=device,
            etype=type,
            cue=cue,
            limit=limit,
            offset=offset,
        )

    @app.get(
        "/api/events.csv",
        tags=["events"],
        response_class=CsvResponse,
        responses={
            200: {"description": "CSV, header row first"},
            **errors(*AUTH, 422, json_route=False),
        },
    )
    def get_events_csv(
        who: Viewer,
        db: Db,
        site: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> StreamingResponse:
        """CSV export of events (oldest first); `since`/`until` are Unix seconds."""
        if site is not None:
            require_site(who, site)
        return CsvResponse(
            ops.events_csv(db, sites=who.sites, site=site, since=since, until=until),
            headers={"Content-Disposition": 'attachment; filename="calmcue-events.csv"'},
        )

    @app.get("/api/stats", tags=["events"], responses=errors(*AUTH, 422))
    def get_stats(who: Viewer, db: Db, site: str | None = None) -> dict[str, Any]:
        """Today's cues by type, per hour and per counter, time to de-escalate, weekly trend.
        Groups smaller than min_group_size are null (suppressed)."""
        if site is not None:
            require_site(who, site)
        return stats.dashboard_stats(
            db, sites=who.sites, site=site, min_group_size=settings.min_group_size
        )

    @app.get("/api/dead-letters", tags=["events"], responses=errors(*AUTH, 422))
    def get_dead_letters(
        who: Viewer, db: Db, limit: Limit = 100, offset: Offset = 0
    ) -> list[dict[str, Any]]:
        """Messages the ingest could not store, newest first, with the reason."""
        require(who, "admin", "it")
        return store.list_dead_letters(db, limit=limit, offset=offset)

    @app.get(
        "/api/stream",
        tags=["events"],
        response_class=EventStreamResponse,
        responses={
            200: {"description": "text/event-stream, until the client goes"},
            **errors(401, json_route=False),
        },
    )
    async def stream(request: Request, who: Viewer) -> StreamingResponse:
        """Server-Sent Events: `event` for every newly stored event, `alert` for alert changes."""
        feed: LiveFeed = request.app.state.feed
        return EventStreamResponse(
            feed.stream(who.sites, request.is_disconnected),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ---- alerts ----------------------------------------------------------------------------

    @app.get("/api/alerts", tags=["alerts"], responses=errors(401, 422))
    def get_alerts(
        who: Viewer, db: Db, active: bool = False, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        """Alerts, newest first; `active=true` for open and acknowledged ones only."""
        return alerts_mod.list_alerts(db, sites=who.sites, active_only=active, limit=limit)

    @app.get("/api/alerts/{alert_id}", tags=["alerts"], responses=errors(401, 404, 422))
    def get_alert(who: Viewer, db: Db, alert_id: AlertId) -> dict[str, Any]:
        """One alert with its audit trail (every state change: who, when)."""
        found = alerts_mod.get_alert(db, alert_id)
        if found is None or not who.may_see(found["site"]):
            raise HTTPException(404, f"no alert {alert_id} you may see")
        return {**found, "audit": alerts_mod.audit_of(db, alert_id)}

    def _act(who: Principal, db: Engine, mgr: AlertManager, alert_id: int, action: str) -> Any:
        require(who, "admin", "manager")
        found = alerts_mod.get_alert(db, alert_id)
        if found is None or not who.may_see(found["site"]):
            raise HTTPException(404, f"no alert {alert_id} at your sites")
        site = found["site"]
        try:
            actor = f"user:{who.username}"
            if action == "ack":
                return mgr.acknowledge(alert_id, actor, site=site)
            return mgr.resolve(alert_id, actor, site=site)
        except AlertError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    @app.post("/api/alerts/{alert_id}/ack", tags=["alerts"], responses=errors(*AUTH, 404, 409, 422))
    def ack_alert(who: Viewer, db: Db, mgr: Alerts, alert_id: AlertId) -> dict[str, Any]:
        return _act(who, db, mgr, alert_id, "ack")  # type: ignore[no-any-return]

    @app.post(
        "/api/alerts/{alert_id}/resolve", tags=["alerts"], responses=errors(*AUTH, 404, 409, 422)
    )
    def resolve_alert(who: Viewer, db: Db, mgr: Alerts, alert_id: AlertId) -> dict[str, Any]:
        return _act(who, db, mgr, alert_id, "resolve")  # type: ignore[no-any-return]

    # ---- sites and devices -----------------------------------------------------------------

    @app.get("/api/sites", tags=["sites"], responses=errors(401))
    def get_sites(who: Viewer, db: Db) -> list[dict[str, Any]]:
        return store.list_sites(db, sites=who.sites)

    @app.put("/api/sites/{site}", tags=["sites"], responses=errors(*AUTH, *BODY))
    def put_site(who: Viewer, db: Db, site: str, body: SiteUpdate) -> dict[str, Any]:
        """Name and alert contacts of a site (the second contact gets escalations)."""
        require(who, "admin")
        try:
            return store.upsert_site(db, site=site, **body.model_dump(exclude_none=True))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/api/sites/{site}/config", tags=["sites"], responses=errors(*AUTH, 404))
    def get_site_config(who: Viewer, db: Db, site: str) -> dict[str, Any]:
        require_site(who, site)
        for row in store.list_sites(db, sites=None):
            if row["site"] == site:
                return json.loads(row["config"]) if row["config"] else {}
        raise HTTPException(404, f"no site {site!r}")

    @app.put("/api/sites/{site}/config", tags=["sites"], responses=errors(*AUTH, *BODY))
    def put_site_config(
        request: Request, who: Viewer, db: Db, site: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Validate and store a site's configuration, then publish every device's effective
        configuration retained on calmcue/v1/<site>/<device>/config."""
        require(who, "admin", "it")
        try:
            cfg = device_config.set_site(db, site, body)
        except (device_config.ConfigError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from None
        topics = device_config.publish_site(db, site, request.app.state.ingest.publish)
        return {"config": cfg.model_dump(exclude_none=True), "published": topics}

    @app.get("/api/devices/{site}/{device}/config", tags=["devices"], responses=errors(*AUTH, 404))
    def get_device_config(who: Viewer, db: Db, site: str, device: str) -> dict[str, Any]:
        """Site and device documents, the effective merge, and the payload the device gets."""
        require_site(who, site)
        try:
            return device_config.effective(db, site, device)
        except device_config.ConfigError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.put(
        "/api/devices/{site}/{device}/config",
        tags=["devices"],
        responses=errors(*AUTH, 404, *BODY),
    )
    def put_device_config(
        request: Request, who: Viewer, db: Db, site: str, device: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        require(who, "admin", "it")
        try:
            device_config.set_device(db, site, device, body)
        except device_config.ConfigError as exc:
            status = 404 if "registry" in str(exc) else 422
            raise HTTPException(status, str(exc)) from None
        device_config.publish_device(db, site, device, request.app.state.ingest.publish)
        return device_config.effective(db, site, device)

    @app.post("/api/devices", tags=["devices"], status_code=201, responses=errors(*AUTH, *BODY))
    def post_device(request: Request, who: Viewer, db: Db, body: DeviceCreate) -> dict[str, Any]:
        """Register a device before it first reports (needed when auto-registration is off)."""
        require(who, "admin", "it")
        row = store.register_device(db, site=body.site, device=body.device)
        request.app.state.ingest.register_device(body.site, body.device)
        return row

    @app.get("/api/devices", tags=["devices"], responses=errors(401))
    def get_devices(who: Viewer, db: Db) -> list[dict[str, Any]]:
        """The device registry: status from the LWT, last seen, firmware, model, telemetry."""
        return store.list_devices(db, sites=who.sites)

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
