"""What every router of the API shares, in one place: the settings, the database engine and the
alert manager of the running app; the caller (`Viewer`, `Maybe`) and the role and site checks;
the documented error answers (`errors()`, `AUTH`, `BODY`); the non-JSON response classes; and
the security middleware (CSRF, headers, signed session cookie)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.middleware.sessions import SessionMiddleware

from companion.alerts import AlertManager
from companion.auth import Principal, current_principal
from companion.config import Settings
from companion.web_security import SecurityMiddleware

STATIC = Path(__file__).resolve().parent.parent / "static"


# ---- the running app's parts ---------------------------------------------------------------


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def alert_manager(request: Request) -> AlertManager:
    return request.app.state.alerts  # type: ignore[no-any-return]


def config_results(request: Request) -> Any:
    """The devices' answers to their config (companion/fleet_view.py ConfigResults), or None
    in an app built without them."""
    return getattr(request.app.state, "config_results", None)


Config = Annotated[Settings, Depends(settings_of)]
Results = Annotated[Any, Depends(config_results)]
Db = Annotated[Engine, Depends(engine_of)]
Alerts = Annotated[AlertManager, Depends(alert_manager)]

# ---- parameters ------------------------------------------------------------------------------

Limit = Annotated[int, Query(ge=1, le=1000)]
# bounds the database takes (SQLite and PostgreSQL integers are 64-bit at most)
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
AlertId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

# ---- the caller and what it may do ---------------------------------------------------------------

Viewer = Annotated[Principal, Depends(current_principal)]


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


# ---- documented answers ------------------------------------------------------------------------


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


# ---- middleware ------------------------------------------------------------------------------


def add_security_middleware(app: FastAPI, settings: Settings) -> None:
    """CSRF check, security headers (companion/web_security.py) and the signed session cookie."""
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
