"""Users, roles and API tokens.

Roles: `admin` (everything), `it` (devices, configuration, dead letters; every site) and
`manager` (alerts, events and statistics of their own sites only). Passwords are hashed with
argon2 (argon2-cffi); API tokens are random and stored only as a SHA-256 hash, listed and
revoked by id.

Dashboard sessions are server-side: the signed cookie carries a random session id (and the
CSRF token), the `sessions` table only its hash with an expiry, so logout or expiry makes the
cookie worthless. Failed logins are counted per username and per client address; after
`login_max_failures` within `login_window_s` further tries are refused until the window passes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from sqlalchemy import Engine, delete, func, insert, select

from companion.auth import Principal
from companion.db import api_tokens, login_failures, sessions, users

ROLES = ("admin", "it", "manager")
_hasher = PasswordHasher()
_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")
_SITE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MIN_PASSWORD = 8


class UserError(ValueError):
    """A user that cannot be created as asked; the message says what to change."""


def principal_of(row: Any) -> Principal:
    if row.role == "manager":
        return Principal(row.username, row.role, frozenset(s for s in row.sites.split(",") if s))
    return Principal(row.username, row.role, None)


def create_user(
    engine: Engine, *, username: str, password: str, role: str, sites: list[str] | None = None
) -> Principal:
    sites = sites or []
    if not _USERNAME.fullmatch(username):
        raise UserError("username must be 1-64 chars of a-z, 0-9, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password must be at least {MIN_PASSWORD} characters")
    if role == "manager" and not sites:
        raise UserError("a manager needs at least one site (sites=['store-1', ...])")
    if role != "manager" and sites:
        raise UserError(f"role {role} sees every site; give sites only to managers")
    bad = [s for s in sites if not _SITE.fullmatch(s)]
    if bad:
        raise UserError(f"not a site id: {', '.join(bad)}")
    with engine.begin() as conn:
        if conn.execute(select(users.c.id).where(users.c.username == username)).first():
            raise UserError(f"user {username!r} already exists")
        conn.execute(
            insert(users).values(
                username=username,
                password_hash=_hasher.hash(password),
                role=role,
                sites=",".join(sorted(set(sites))),
                created_at=time.time(),
            )
        )
    return Principal(username, role, frozenset(sites) if role == "manager" else None)


def authenticate(engine: Engine, username: str, password: str) -> Principal | None:
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        _hasher.hash(password)  # same work either way, so timing does not reveal usernames
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return principal_of(row)


def user_by_name(engine: Engine, username: str) -> Principal | None:
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
    return principal_of(row) if row else None


def create_token(engine: Engine, username: str, name: str = "api") -> str:
    """A new API token for `username`; the only time the plain token is available."""
    token = "cc_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        uid = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if uid is None:
            raise UserError(f"no user {username!r}")
        conn.execute(
            insert(api_tokens).values(
                user_id=uid, token_hash=_token_hash(token), name=name[:64], created_at=time.time()
            )
        )
    return token


def list_tokens(engine: Engine, username: str | None = None) -> list[dict[str, Any]]:
    """Tokens (never their value) of one user, or of everyone when username is None."""
    q = (
        select(api_tokens.c.id, api_tokens.c.name, api_tokens.c.created_at, users.c.username)
        .join(users, api_tokens.c.user_id == users.c.id)
        .order_by(api_tokens.c.id)
    )
    if username is not None:
        q = q.where(users.c.username == username)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def revoke_token(engine: Engine, token_id: int, username: str | None = None) -> bool:
    """Delete a token; with `username`, only if it is theirs. False when there is none."""
    with engine.begin() as conn:
        q = select(api_tokens.c.id).where(api_tokens.c.id == token_id)
        if username is not None:
            q = q.join(users, api_tokens.c.user_id == users.c.id).where(
                users.c.username == username
            )
        if conn.execute(q).first() is None:
            return False
        conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id))
    return True


# ---- sessions --------------------------------------------------------------------------------


def create_session(engine: Engine, username: str, max_age_s: float) -> str:
    """A new server-side session for `username`; returns the id for the (signed) cookie."""
    sid = secrets.token_urlsafe(32)
    now = time.time()
    with engine.begin() as conn:
        uid = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if uid is None:
            raise UserError(f"no user {username!r}")
        conn.execute(delete(sessions).where(sessions.c.expires_at < now))  # tidy as we go
        conn.execute(
            insert(sessions).values(
                id_hash=_token_hash(sid), user_id=uid, created_at=now, expires_at=now + max_age_s
            )
        )
    return sid


def principal_for_session(engine: Engine, sid: str) -> Principal | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(users)
            .join(sessions, sessions.c.user_id == users.c.id)
            .where(sessions.c.id_hash == _token_hash(sid), sessions.c.expires_at > time.time())
        ).first()
    return principal_of(row) if row else None


def end_session(engine: Engine, sid: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.id_hash == _token_hash(sid)))


# ---- login lockout ---------------------------------------------------------------------------


def lockout_keys(username: str, client_ip: str | None) -> list[str]:
    keys = [f"user:{username[:100]}"]
    if client_ip:
        keys.append(f"ip:{client_ip[:100]}")
    return keys


def locked_for(engine: Engine, keys: list[str], max_failures: int, window_s: float) -> float:
    """Seconds until a login for these keys may be tried again (0 = now)."""
    now = time.time()
    wait = 0.0
    with engine.connect() as conn:
        for key in keys:
            recent = conn.execute(
                select(login_failures.c.at)
                .where(login_failures.c.key == key, login_failures.c.at > now - window_s)
                .order_by(login_failures.c.at.desc())
                .limit(max_failures)
            ).scalars().all()
            if len(recent) >= max_failures:
                # locked until the oldest of the last max_failures leaves the window
                wait = max(wait, recent[-1] + window_s - now)
    return wait


def record_failure(engine: Engine, keys: list[str], window_s: float) -> None:
    now = time.time()
    with engine.begin() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.at < now - window_s))
        for key in keys:
            conn.execute(insert(login_failures).values(key=key, at=now))


def clear_failures(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(login_failures).where(login_failures.c.key == key))


def principal_for_token(engine: Engine, token: str) -> Principal | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(users)
            .join(api_tokens, api_tokens.c.user_id == users.c.id)
            .where(api_tokens.c.token_hash == _token_hash(token))
        ).first()
    return principal_of(row) if row else None


def count_users(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def list_users(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            {"username": r.username, "role": r.role, "sites": [s for s in r.sites.split(",") if s]}
            for r in conn.execute(select(users).order_by(users.c.username))
        ]


def resolve_principal(request: Request) -> Principal | None:
    """Bearer token first (API clients), then the session cookie (dashboard)."""
    engine: Engine = request.app.state.engine
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return principal_for_token(engine, header[7:].strip())
    sid = request.session.get("sid") if "session" in request.scope else None
    return principal_for_session(engine, sid) if isinstance(sid, str) else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
