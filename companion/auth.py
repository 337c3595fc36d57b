"""Who is asking: a `Principal` with a role and the sites it may see.

In demo mode everyone is the demo principal (every site, may acknowledge alerts). Otherwise a
request needs a session cookie (dashboard login) or an `Authorization: Bearer <token>` header.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request, status


@dataclass(frozen=True)
class Principal:
    username: str
    role: str  # "admin", "it", "manager" or "demo"
    sites: frozenset[str] | None  # None = every site

    def may_see(self, site: str) -> bool:
        return self.sites is None or site in self.sites


DEMO = Principal(username="demo", role="demo", sites=None)


def current_principal(request: Request) -> Principal:
    settings = request.app.state.settings
    if settings.open_access:
        return DEMO
    resolver = getattr(request.app.state, "resolve_principal", None)
    found = resolver(request) if resolver else None
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "log in at /login, or send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found
