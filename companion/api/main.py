"""The API's routers in one router, in the order the app serves them (companion/app.py mounts
it; the fleet's routers, companion/fleet.py, are mounted next to it)."""

from __future__ import annotations

from fastapi import APIRouter

from companion.api.routes import alerts, auth, devices, events, fleet, health, push

api_router = APIRouter()
for area in (health, auth, events, alerts, devices, fleet, push):
    api_router.include_router(area.router)
