"""Browser-facing protections for every response and every state-changing request (issue 17):

- standard security headers: a Content-Security-Policy that lets the dashboard in
  companion/static run (own scripts and styles only, no inline code, no framing), nosniff,
  X-Frame-Options DENY, Referrer-Policy, and Strict-Transport-Security over HTTPS;
- CSRF: a POST/PUT/PATCH/DELETE whose Origin (or, without one, Referer) names another site is
  refused, and one authenticated by the session cookie must carry the session's CSRF token in
  the `X-CSRF-Token` header (the dashboard reads it from GET /api/session). Bearer-token calls
  are not sent by browsers on their own and need no token.

Plain ASGI middleware (no BaseHTTPMiddleware), so the live feed's streaming is untouched. Add it
before SessionMiddleware so that it runs inside it and sees the decoded session.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

Scope = dict[str, Any]
ASGIApp = Any

CSRF_HEADER = "x-csrf-token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the login form is the one state-changing call made before there is a session (Origin-checked)
CSRF_EXEMPT = frozenset({"/api/login"})

DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI at /docs starts itself with an inline script and inline styles
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return parts.netloc.lower() if parts.scheme in ("http", "https") and parts.netloc else None


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts  # always send HSTS (production: served behind HTTPS)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refuse(scope) if scope["method"] in UNSAFE else None
        extra = self._security_headers(scope)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in have
                ]
            await send(message)

        if refusal is not None:
            body = json.dumps({"detail": refusal}).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def _refuse(self, scope: Scope) -> str | None:
        """Why this state-changing request is refused, or None."""
        h = _headers(scope)
        host = h.get("host", "").lower()
        origin = h.get("origin")
        source = origin if origin is not None else h.get("referer")
        if source is not None and (not host or _netloc(source) != host):
            return (
                f"cross-site request refused: {'Origin' if origin is not None else 'Referer'} "
                f"{source!r} is not this site ({host})"
            )
        if h.get("authorization", "").lower().startswith("bearer "):
            return None  # API clients: no ambient credentials, nothing to forge
        session = scope.get("session") or {}
        if scope["path"] in CSRF_EXEMPT or not session.get("sid"):
            return None  # not authenticated by the cookie; the endpoint decides (401 or demo)
        want = session.get("csrf")
        got = h.get(CSRF_HEADER, "")
        if not isinstance(want, str) or not hmac.compare_digest(want.encode(), got.encode()):
            return (
                "missing or wrong CSRF token: send the X-CSRF-Token header with the csrf value "
                "from GET /api/session"
            )
        return None

    def _security_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path = scope["path"]
        csp = DOCS_CSP if path == "/docs" else DASHBOARD_CSP
        out = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if self.hsts or scope.get("scheme") == "https":
            out.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        return out
