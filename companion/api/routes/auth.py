"""Login, logout and the session; API tokens; users."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from companion import push, users
from companion.api.deps import (
    AUTH,
    BODY,
    STATIC,
    Config,
    Db,
    Viewer,
    errors,
    refuse_demo,
    require,
)
from companion.auth import current_principal

log = logging.getLogger("calmcue.companion")

router = APIRouter()


class UserCreate(BaseModel):
    username: str
    password: str
    role: str
    sites: list[str] = Field(default_factory=list)


class TokenCreate(BaseModel):
    name: str = "api"


@router.get("/login", include_in_schema=False)
def login_page() -> FileResponse:
    return FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-cache"})


@router.post(
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
    settings: Config,
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
    request.session["sid"] = users.create_session(db, who.username, settings.session_max_age_s)
    request.session["csrf"] = secrets.token_urlsafe(32)
    return RedirectResponse("/", status_code=303)


@router.post(
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
        push.forget_session(db, sid)  # its browser's notifications end with it
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/api/session", tags=["auth"])
def session_info(request: Request, settings: Config) -> dict[str, Any]:
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


@router.post("/api/tokens", tags=["auth"], responses=errors(400, 401, 422))
def new_token(who: Viewer, db: Db, body: TokenCreate) -> dict[str, str]:
    """A new bearer token for the caller (shown once): `Authorization: Bearer <token>`."""
    refuse_demo(who, "creating API tokens")
    return {"token": users.create_token(db, who.username, body.name)}


@router.get("/api/tokens", tags=["auth"], responses=errors(*AUTH, 422))
def get_tokens(who: Viewer, db: Db, all: bool = False) -> list[dict[str, Any]]:
    """The caller's API tokens (id, name, created; never the token); an admin may ask for
    everyone's with `all=true`."""
    refuse_demo(who, "API tokens")
    if all:
        require(who, "admin")
    return users.list_tokens(db, None if all else who.username)


@router.delete("/api/tokens/{token_id}", tags=["auth"], responses=errors(*AUTH, 404, 422))
def delete_token(
    who: Viewer, db: Db, token_id: Annotated[int, PathParam(ge=1, le=2**62)]
) -> dict[str, Any]:
    """Revoke a token at once: one's own, or anyone's for an admin."""
    refuse_demo(who, "API tokens")
    owner = None if who.role == "admin" else who.username
    if not users.revoke_token(db, token_id, owner):
        raise HTTPException(404, f"no token {token_id} you may revoke")
    return {"revoked": token_id}


@router.get("/api/users", tags=["auth"], responses=errors(*AUTH))
def get_users(who: Viewer, db: Db) -> list[dict[str, Any]]:
    refuse_demo(who, "the user list")
    require(who, "admin")
    return users.list_users(db)


@router.post("/api/users", tags=["auth"], status_code=201, responses=errors(*AUTH, *BODY))
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
