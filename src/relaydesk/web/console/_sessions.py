"""Console sessions: server-side, in the database, with a per-session CSRF token.

Theory of operation
-------------------
Signing in creates a session under a random 256-bit id; the browser holds only that
id, in an ``HttpOnly``, ``SameSite=Lax`` cookie (``Secure`` over https), and the
database holds only its SHA-256 (``admin_sessions``, ``storage/admin.py``), so a copy of
the database does not let anyone sign in.  Every form carries the session's CSRF token
and every state-changing request is refused unless the submitted token matches
(constant-time compare): SameSite already stops most cross-site posts, the token stops
the rest.

Because sessions live in the database, a restart signs nobody out and every node of a
cluster knows every session.  Each request reads the session row (one indexed read on a
reader thread) and checks, in the same snapshot, that the person and their organisation
are still enabled; a password change, disabling the person or the organisation, or
signing out revokes the row, so revocation takes effect with the next request on every
node.  Sessions expire after ``ttl_s`` of inactivity on the injected clock; the expiry
slides, written at most once per ``_SLIDE_MS`` per session so that page views do not
queue on the single writer.

A person keeps at most ``max_per_person`` live sessions (the oldest are revoked), and
rows dead for a day are deleted when new sessions are created, so the table stays
bounded; the sign-in rate limit (``_signin.py``) bounds how fast rows can be made.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

import msgspec

from relaydesk.clock import Clock
from relaydesk.desk.admin import AdminService
from relaydesk.desk.admin.model import PersonKind
from relaydesk.desk.tickets.model import Principal
from relaydesk.storage.admin import SessionRow
from relaydesk.storage.engine import Tx

SESSION_COOKIE: Final = "rd_console"
#: Double-submit token of the sign-in form (there is no session yet to hold one).
SIGNIN_COOKIE: Final = "rd_signin"
#: The sliding expiry is written at most this often per session.
_SLIDE_MS: Final = 60_000
#: Dead rows (expired or revoked) are deleted after this long.
_KEEP_DEAD_MS: Final = 86_400_000
#: A cookie value is 43 URL-safe characters; anything far longer is not ours.
_MAX_ID: Final = 128


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSession(msgspec.Struct, frozen=True):
    """A signed-in browser: who, their display name, the CSRF token and the expiry."""

    id: str
    principal: Principal
    name: str
    csrf: str
    expires_at: float
    #: Whether the person had the admin role when the session was read (navigation
    #: only: administration pages check the role again).
    admin: bool = False


class SessionStats(msgspec.Struct, frozen=True):
    """A snapshot of the session store."""

    active: int
    created: int
    revoked: int


class SessionStore:
    """Console sessions in the database (see the module docstring)."""

    def __init__(
        self, admin: AdminService, clock: Clock, *, ttl_s: float, max_per_person: int = 20
    ) -> None:
        self._admin = admin
        self._clock = clock
        self._ttl_ms = int(ttl_s * 1000)
        self._max_per_person = max_per_person
        self._created = self._revoked = 0
        # Display only (error pages rendered by synchronous handlers): the last session
        # read per id.  Never used to authorise anything.
        self._recent: dict[str, ConsoleSession] = {}

    def _now(self) -> int:
        return int(self._clock.time() * 1000)

    async def create(self, principal: Principal, name: str) -> ConsoleSession:
        """Start a session for ``principal``."""
        session_id = secrets.token_urlsafe(32)
        now = self._now()
        row = SessionRow(
            owner_kind=principal.kind,
            owner_id=principal.id,
            name=name,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self._ttl_ms,
            revoked_at=None,
        )
        store = self._admin.store

        def run(tx: Tx) -> bool:
            store.delete_dead_sessions(tx, now - _KEEP_DEAD_MS)
            store.insert_session(tx, _hash(session_id), row)
            store.trim_sessions_of(tx, (principal.kind, principal.id), self._max_per_person, now)
            return self._admin.role(tx, principal.kind, principal.id) == "admin"

        is_admin = await self._admin.write(run)
        self._created += 1
        return ConsoleSession(
            id=session_id,
            principal=principal,
            name=name,
            csrf=row.csrf,
            expires_at=row.expires_at / 1000,
            admin=is_admin,
        )

    async def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id (sliding expiry), else ``None``."""
        if not session_id or len(session_id) > _MAX_ID:
            return None
        digest = _hash(session_id)
        now = self._now()
        admin = self._admin
        desk = self._admin.tickets_store

        def run(tx: Tx) -> tuple[SessionRow, Principal, bool] | None:
            row = admin.store.session(tx, digest)
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            org = None
            if row.owner_kind == "customer":
                contact = desk.contact(tx, row.owner_id)
                if contact is None:
                    return None
                org = contact.organisation_id
            kind: PersonKind = "agent" if row.owner_kind == "agent" else "customer"
            principal = Principal(kind=kind, id=row.owner_id, organisation_id=org)
            if not admin.principal_enabled(tx, principal):
                return None
            return row, principal, admin.role(tx, kind, row.owner_id) == "admin"

        found = await admin.read(run)
        if found is None:
            self._recent.pop(session_id, None)
            return None
        row, principal, is_admin = found
        expires = row.expires_at
        if now + self._ttl_ms - expires >= _SLIDE_MS:
            expires = now + self._ttl_ms
            await admin.write(lambda tx: admin.store.extend_session(tx, digest, expires))
        session = ConsoleSession(
            id=session_id,
            principal=principal,
            name=row.name,
            csrf=row.csrf,
            expires_at=expires / 1000,
            admin=is_admin,
        )
        if len(self._recent) >= 1000:
            self._recent.pop(next(iter(self._recent)))
        self._recent[session_id] = session
        return session

    def peek(self, session_id: str | None) -> ConsoleSession | None:
        """The session last read under this id, for display on error pages only."""
        return self._recent.get(session_id) if session_id else None

    async def end(self, session_id: str | None) -> None:
        """Sign out."""
        if not session_id:
            return
        self._recent.pop(session_id, None)
        digest, now = _hash(session_id), self._now()
        await self._admin.write(lambda tx: self._admin.store.revoke_session(tx, digest, now))
        self._revoked += 1

    async def statistics(self) -> SessionStats:
        """Live sessions in the database and this process's counts since start."""
        now = self._now()
        active = await self._admin.read(lambda tx: self._admin.store.live_sessions(tx, now))
        return SessionStats(active=active, created=self._created, revoked=self._revoked)


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token (``None`` and empty never match)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
