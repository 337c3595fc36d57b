"""Web Push for managers: the companion's public key, a browser's subscription, the service
worker and the web app manifest (companion/push.py sends the messages)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from companion import push
from companion.api.deps import AUTH, BODY, STATIC, Db, Viewer, errors, require

router = APIRouter()


class PushKeys(BaseModel):
    p256dh: str = Field(max_length=128)
    auth: str = Field(max_length=64)


class PushSubscriptionIn(BaseModel):
    """What the browser's PushSubscription.toJSON() gives."""

    endpoint: str = Field(max_length=2048)
    keys: PushKeys


class PushEndpoint(BaseModel):
    endpoint: str = Field(max_length=2048)


def _pusher(request: Request) -> push.Pusher:
    return request.app.state.pusher  # type: ignore[no-any-return]


def _real_user(who: Any) -> None:
    require(who, "admin", "manager")
    if who.role == "demo":
        raise HTTPException(403, "notifications need a login: demo mode has no users")


@router.get("/api/push/key", tags=["push"], responses=errors(*AUTH))
def get_push_key(request: Request, who: Viewer, db: Db) -> dict[str, Any]:
    """The VAPID public key to subscribe with (`applicationServerKey`), and how many browsers
    of yours are subscribed."""
    mine = 0 if who.role == "demo" else push.count_for(db, who.username)
    return {"public_key": _pusher(request).public_key, "subscriptions": mine}


@router.post(
    "/api/push/subscriptions", tags=["push"], status_code=201, responses=errors(*AUTH, *BODY)
)
def post_push_subscription(
    request: Request, who: Viewer, db: Db, body: PushSubscriptionIn
) -> dict[str, Any]:
    """Notify this browser of your sites' manager alerts (open, escalated, acknowledged), until
    you stop it or log out of this session."""
    _real_user(who)
    sid = request.session.get("sid")
    try:
        return push.subscribe(
            db,
            username=who.username,
            endpoint=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
            session_id=sid if isinstance(sid, str) else None,
        )
    except push.PushError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/api/push/unsubscribe", tags=["push"], responses=errors(*AUTH, 404, *BODY))
def post_push_unsubscribe(who: Viewer, db: Db, body: PushEndpoint) -> dict[str, Any]:
    """Stop notifying this browser."""
    _real_user(who)
    if not push.unsubscribe(db, username=who.username, endpoint=body.endpoint):
        raise HTTPException(404, "no such subscription of yours")
    return {"unsubscribed": True}


# The service worker must be served from / to control the whole dashboard (its scope is the
# folder it is served from); the manifest with its own media type.
@router.get("/sw.js", include_in_schema=False)
def service_worker() -> FileResponse:
    return FileResponse(
        STATIC / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )


@router.get("/manifest.webmanifest", include_in_schema=False)
def manifest() -> FileResponse:
    return FileResponse(STATIC / "manifest.webmanifest", media_type="application/manifest+json")
