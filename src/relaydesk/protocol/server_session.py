"""Server-side session state machine, sans I/O (docs/protocol.md §3, §6).

Theory of operation
-------------------
A connection is in one of three phases; ``ALLOWED`` is the whole transition
table: which frame types each phase accepts.  The gateway decodes a frame, asks
``ServerSession.admit(frame, now)`` and gets either ``None`` (go ahead) or a
``ProtocolError`` whose ``code.closes`` says whether to close.  Deadlines (login,
heartbeat, token expiry) are checked by ``ServerSession.expired(now)``, which the
gateway's reaper calls once a second for every connection: no per-connection
timers.  ``now`` is always a parameter, monotonic seconds for deadlines and wall
seconds for token expiry.

Publishing is rate limited by a token bucket (``rate`` per second, ``burst``
deep).  A publish over the limit is rejected with RATE_LIMITED (nothing is
stored; the SDK outbox retries later); ``flood_rejections`` rejections in a row
mean the client ignores the limit, and the connection is closed with FLOODING.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    Ack,
    Delete,
    Frame,
    Hello,
    HistoryQuery,
    Invite,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Probe,
    Publish,
    Read,
    Refresh,
)


class Phase(enum.Enum):
    AWAIT_HELLO = "await_hello"
    ACTIVE = "active"
    CLOSED = "closed"


_ACTIVE_FRAMES: frozenset[type[Frame]] = frozenset(
    {
        Ping,
        Publish,
        Ack,
        Read,
        Delete,
        Join,
        Leave,
        Invite,
        HistoryQuery,
        PresenceQuery,
        Refresh,
        Probe,
    }
)
ALLOWED: dict[Phase, frozenset[type[Frame]]] = {
    Phase.AWAIT_HELLO: frozenset({Hello}),
    Phase.ACTIVE: _ACTIVE_FRAMES,
    Phase.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class SessionLimits:
    auth_timeout_s: float
    heartbeat_timeout_s: float
    publish_rate: float
    publish_burst: float
    flood_rejections: int
    max_body: int


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; pure (time passed in)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, now

    def take(self, now: float, n: float = 1.0) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class ServerSession:
    """Per-connection protocol state: phase, deadlines, publish rate."""

    __slots__ = ("_bucket", "_rejections", "exp", "last_heard", "limits", "opened", "phase")

    def __init__(self, limits: SessionLimits, now: float) -> None:
        self.limits = limits
        self.phase = Phase.AWAIT_HELLO
        self.opened = now
        self.last_heard = now
        self.exp: float | None = None  # token expiry, wall seconds
        self._bucket = TokenBucket(limits.publish_rate, limits.publish_burst, now)
        self._rejections = 0

    def admit(self, frame: Frame, now: float) -> ProtocolError | None:
        """Whether ``frame`` may be handled now; updates liveness and rate state."""
        self.last_heard = now
        kind = type(frame)
        if kind not in ALLOWED[self.phase]:
            if self.phase is Phase.AWAIT_HELLO:
                return ProtocolError(ErrorCode.NOT_AUTHENTICATED, "the first frame must be hello")
            if kind is Hello:
                return ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "already logged in")
            return ProtocolError(ErrorCode.BAD_FRAME, "connection is closed")
        if kind is Publish:
            assert isinstance(frame, Publish)
            if len(frame.body) > self.limits.max_body:
                return ProtocolError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"body is {len(frame.body)} bytes; the limit is {self.limits.max_body}",
                )
            if not self._bucket.take(now):
                self._rejections += 1
                if self._rejections >= self.limits.flood_rejections:
                    return ProtocolError(ErrorCode.FLOODING, "publish rate limit ignored")
                return ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"over {self.limits.publish_rate:g} publishes/s; retry later",
                )
            self._rejections = 0
        return None

    def logged_in(self, exp: float) -> None:
        self.phase = Phase.ACTIVE
        self.exp = exp

    def refreshed(self, exp: float) -> None:
        self.exp = exp

    def closed(self) -> None:
        self.phase = Phase.CLOSED

    def expired(self, mono_now: float, wall_now: float) -> ProtocolError | None:
        """The deadline this connection has missed, if any."""
        if self.phase is Phase.AWAIT_HELLO:
            if mono_now - self.opened > self.limits.auth_timeout_s:
                return ProtocolError(ErrorCode.AUTH_TIMEOUT, "no hello within the login deadline")
            return None
        if self.phase is Phase.ACTIVE:
            if mono_now - self.last_heard > self.limits.heartbeat_timeout_s:
                return ProtocolError(
                    ErrorCode.HEARTBEAT_TIMEOUT,
                    f"nothing heard for {self.limits.heartbeat_timeout_s:g}s",
                )
            if self.exp is not None and wall_now > self.exp:
                return ProtocolError(ErrorCode.TOKEN_EXPIRED, "token expired; refresh in time")
        return None
