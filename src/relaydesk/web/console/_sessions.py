"""Console sessions: server-side, in memory, with a per-session CSRF token.

Theory of operation
-------------------
Signing in creates a :class:`ConsoleSession` under a random 256-bit id; the browser
holds only that id, in an ``HttpOnly``, ``SameSite=Lax`` cookie (``Secure`` over
https).  Every form carries the session's CSRF token and every state-changing request
is refused unless the submitted token matches (constant-time compare): SameSite
already stops most cross-site posts, the token stops the rest (sibling subdomains,
old browsers).  Sessions expire after ``ttl_s`` of inactivity, measured on the
injected clock; an expired session sends the browser back to sign-in while the page
keeps its draft in ``localStorage`` (``static/console.js``).

The table is bounded (``max_sessions``): when full, the session used least recently
is dropped, so a flood of sign-ins cannot grow memory without limit.  Sessions live in
one process and are lost on restart; that signs people out and nothing else.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from typing import Final

import msgspec

from relaydesk.clock import Clock
from relaydesk.desk.tickets.model import Principal

SESSION_COOKIE: Final = "rd_console"
#: Double-submit token of the sign-in form (there is no session yet to hold one).
SIGNIN_COOKIE: Final = "rd_signin"


class ConsoleSession(msgspec.Struct, frozen=True):
    """A signed-in browser: who, their display name, the CSRF token and the expiry."""

    id: str
    principal: Principal
    name: str
    csrf: str
    expires_at: float


class SessionStats(msgspec.Struct, frozen=True):
    """A snapshot of the session table."""

    active: int
    created: int
    evicted: int
    expired: int


class SessionTable:
    """Server-side sessions keyed by an unguessable id (see the module docstring)."""

    def __init__(self, clock: Clock, *, ttl_s: float, max_sessions: int) -> None:
        self._clock = clock
        self._ttl = ttl_s
        self._max = max_sessions
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()
        self._created = self._evicted = self._expired = 0

    def create(self, principal: Principal, name: str) -> ConsoleSession:
        """Start a session for ``principal``."""
        session = ConsoleSession(
            id=secrets.token_urlsafe(32),
            principal=principal,
            name=name,
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock.time() + self._ttl,
        )
        self._sessions[session.id] = session
        self._created += 1
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
            self._evicted += 1
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id (sliding expiry), else ``None``."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock.time()
        if session.expires_at <= now:
            del self._sessions[session_id]
            self._expired += 1
            return None
        session = msgspec.structs.replace(session, expires_at=now + self._ttl)
        self._sessions[session_id] = session
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str | None) -> None:
        """Sign out."""
        if session_id:
            self._sessions.pop(session_id, None)

    def statistics(self) -> SessionStats:
        """Counts since start."""
        return SessionStats(
            active=len(self._sessions),
            created=self._created,
            evicted=self._evicted,
            expired=self._expired,
        )


def tokens_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token (``None`` and empty never match)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
