"""Server-side session of one connection, sans I/O (docs/protocol.md §3, §5, §6).

Theory of operation
-------------------
The gateway (the I/O shell) owns the socket, the hub and the clock; this module owns
what every frame *means*.  The shell feeds each received WebSocket message to
``ServerSession.receive(data, now, wall_ms, sent)`` and gets back at most one
*action* to carry out:

=================  ====================================================================
action             the shell ...
=================  ====================================================================
a ``Frame``        queues that frame on the connection's reply queue
``Close``          sends ``final`` (an ``error`` frame) and closes with ``code``
``Attach``         looks up the stored cursor, registers the device with the hub, then
                   asks ``welcome(...)`` for the ``welcome`` frame
``Commit``         submits ``intent`` to the hub; on completion hands the outcome to
                   ``committed(commit, ...)`` and sends the frame it returns
``QueryHistory``   reads the page from storage, then ``history_page(...)``
``QueryPresence``  reads the hub's presence table, then ``presence_state(...)``
``NoteAck``        stores the device cursor (coalesced by the hub)
``QueryMeta``      reads a metadata object (membership checked), then ``meta_state``
``QueryLocks``     reads a channel's locks (membership checked), then ``locks``
``QueryWho``       reads a channel's online members and states, then ``who``
``QueryWhere``     reads a user's channels and states (the shell builds ``where``)
=================  ====================================================================

``ALLOWED`` is the whole phase table: which frame types each phase accepts.  Deadlines
(login, heartbeat, token expiry) are checked by ``expired(now, wall_now)``, which the
gateway's reaper calls once a second for every connection: no per-connection timers.
``now`` is always a parameter: monotonic seconds for deadlines, wall time for tokens.

Publishing is rate limited by a token bucket (``rate`` per second, ``burst`` deep).
A publish over the limit, or past the in-flight bound, is rejected with RATE_LIMITED
(nothing is stored; the SDK outbox retries later).  Rejections themselves draw on a
second bucket (``flood_rejections - 1`` deep, refilled at ``flood_rejections`` per
second): a client that collects ``flood_rejections`` RATE_LIMITED within about a
second is ignoring them, and that refusal is FLOODING, which closes.  (Counting
rejections "in a row" never fired: at any send rate the bucket refills between two
frames now and then, and one accepted publish reset the count.)

Telemetry observes through one narrow interface, ``SessionObserver``: the session
calls it at the points the lifecycle defines (login refused, publish committed or
refused, ack, probe).  Without telemetry the observer is a no-op object, so the hot
path has no ``if telemetry`` branches.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from relaydesk.protocol.addresses import (
    Conversation,
    channel_conversation,
    check_scope,
    resolve,
)
from relaydesk.protocol.codec import Codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    Ack,
    AuthOk,
    ClientFrame,
    Delete,
    Error,
    Event,
    Frame,
    Hello,
    HistoryPage,
    HistoryQuery,
    Invite,
    Join,
    Joined,
    Leave,
    LockInfo,
    LockOk,
    LockQuery,
    LockRequest,
    Locks,
    MetaEntry,
    MetaGet,
    MetaItem,
    MetaOk,
    MetaSet,
    MetaState,
    Ok,
    OnlineMember,
    Ping,
    Pong,
    PresenceQuery,
    PresenceState,
    Probe,
    PubAck,
    Publish,
    Read,
    Refresh,
    StateSet,
    UserPresence,
    Welcome,
    WhereNow,
    Who,
    WhoNow,
)
from relaydesk.protocol.locks import decode_lock_change
from relaydesk.protocol.tokens import Claims, verify_token

# Per-session cache of resolved publish addresses (a client writing to many
# conversations just resolves again after a reset).
RESOLVED_MAX = 64
# The flood bucket holds ``flood_rejections`` and refills that many per window.
FLOOD_WINDOW_S = 1.0


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
        MetaSet,
        MetaGet,
        LockRequest,
        LockQuery,
        StateSet,
        WhoNow,
        WhereNow,
    }
)
ALLOWED: dict[Phase, frozenset[type[Frame]]] = {
    Phase.AWAIT_HELLO: frozenset({Hello}),
    Phase.ACTIVE: _ACTIVE_FRAMES,
    Phase.CLOSED: frozenset(),
}


# Bounds of a client-requested heartbeat interval (docs/protocol.md §6.2): below
# 2 s pings cost more than they tell; above 120 s a mobile carrier's NAT (30-120 s
# idle timeouts) has forgotten the connection before the next ping refreshes it.
HEARTBEAT_MIN_MS = 2_000
HEARTBEAT_MAX_MS = 120_000
# The server's silence timeout is at least this many agreed heartbeat intervals.
HEARTBEAT_TIMEOUT_BEATS = 3


def negotiate_heartbeat(
    requested_ms: int | None, default_ms: int, timeout_s: float
) -> tuple[int, float]:
    """The agreed heartbeat interval (ms) and the server's silence timeout (s)."""
    if requested_ms is None:
        return default_ms, timeout_s
    agreed = min(HEARTBEAT_MAX_MS, max(HEARTBEAT_MIN_MS, requested_ms))
    return agreed, max(timeout_s, HEARTBEAT_TIMEOUT_BEATS * agreed / 1000)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    auth_timeout_s: float
    heartbeat_timeout_s: float
    publish_rate: float
    publish_burst: float
    flood_rejections: int
    max_body: int
    max_frame: int = 64 * 1024
    max_inflight: int = 5000
    max_reply_bytes: int = 1024 * 1024  # a history page is cut to about this size
    heartbeat_ms: int = 10_000
    node: str = ""
    region: str = ""


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


# --------------------------------------------------------------------- observer


class SessionObserver(Protocol):
    """What telemetry sees of a session (docs/telemetry.md); every call is synchronous."""

    def login_refused(self, hello: Hello, code: ErrorCode) -> None: ...

    def published(self, recv: float, pos: int, conv: str, fresh: bool) -> None: ...

    def publish_failed(self) -> None: ...

    def acked(self, pos: int) -> None: ...

    def probe(self, report: Probe) -> None: ...


class NullObserver:
    """The observer when telemetry is off: every hook does nothing."""

    __slots__ = ()

    def login_refused(self, hello: Hello, code: ErrorCode) -> None:
        pass

    def published(self, recv: float, pos: int, conv: str, fresh: bool) -> None:
        pass

    def publish_failed(self) -> None:
        pass

    def acked(self, pos: int) -> None:
        pass

    def probe(self, report: Probe) -> None:
        pass


NULL_OBSERVER = NullObserver()


# ---------------------------------------------------------------------- intents
# What a frame asks storage to do, in protocol terms; the shell turns each into the
# storage operation of the same name (the session never imports storage).


class PublishIntent(msgspec.Struct, frozen=True):
    conv: Conversation
    client_id: str
    body: bytes
    enc: str
    ts: int


class ReadIntent(msgspec.Struct, frozen=True):
    conv: Conversation
    seq: int
    ts: int


class DeleteIntent(msgspec.Struct, frozen=True):
    conv: Conversation
    seq: int
    ts: int


class JoinIntent(msgspec.Struct, frozen=True):
    channel: Conversation
    user: str  # who joins: the session's user, or the invitee
    role: str
    via: str  # "grant" | "public" | "invite"
    ts: int


class LeaveIntent(msgspec.Struct, frozen=True):
    channel: Conversation
    ts: int


class MetaIntent(msgspec.Struct, frozen=True):
    """Change metadata (§5.11); ``conv`` is where its change event goes."""

    conv: Conversation
    scope: str
    target: str
    op: str
    items: tuple[MetaEntry, ...]
    major: int
    lock: str
    ts: int


class LockIntent(msgspec.Struct, frozen=True):
    """A lock operation (§5.12)."""

    channel: Conversation
    op: str
    name: str
    ttl_s: int
    wait: bool
    ts: int


class StateIntent(msgspec.Struct, frozen=True):
    """Set (empty: clear) the session user's presence state in a channel (§5.13)."""

    channel: Conversation
    state: tuple[tuple[str, str], ...]
    ts: int


Intent = (
    PublishIntent
    | ReadIntent
    | DeleteIntent
    | JoinIntent
    | LeaveIntent
    | MetaIntent
    | LockIntent
    | StateIntent
)


class Answer(enum.Enum):
    """How a committed operation is answered."""

    PUBACK = "puback"
    OK = "ok"
    JOINED = "joined"
    META = "meta_ok"
    LOCK = "lock_ok"
    NONE = "none"  # read markers: no reply, errors still reported


_PUBACK = Answer.PUBACK  # (a module constant: cheaper than the enum lookup per puback)

# ---------------------------------------------------------------------- actions


class Close(msgspec.Struct, frozen=True):
    code: ErrorCode
    final: Error


class Attach(msgspec.Struct, frozen=True):
    claims: Claims
    hello: Hello


class Commit(msgspec.Struct, frozen=True):
    """Submit ``intent``; the commit's outcome is answered by ``committed(self, ...)``."""

    intent: Intent
    answer: Answer
    rid: int | None = None
    id: str | None = None  # publish: the client message id
    channel: str = ""  # join: the channel name
    conv: str = ""  # join: the channel's conversation id
    recv: float = 0.0  # publish: when it was admitted (telemetry "received")


class QueryHistory(msgspec.Struct, frozen=True):
    rid: int
    conv: Conversation
    before: int | None
    after: int | None
    limit: int


class QueryPresence(msgspec.Struct, frozen=True):
    rid: int
    users: list[str]


class NoteAck(msgspec.Struct, frozen=True):
    pos: int


class QueryMeta(msgspec.Struct, frozen=True):
    """Read ``scope``:``target``; ``member_of`` (a channel conversation) must hold the
    user, or is "" when anyone of the app may read (user metadata)."""

    rid: int
    scope: str
    target: str
    member_of: str


class QueryLocks(msgspec.Struct, frozen=True):
    rid: int
    channel: Conversation


class QueryWho(msgspec.Struct, frozen=True):
    rid: int
    channel: Conversation


class QueryWhere(msgspec.Struct, frozen=True):
    rid: int
    user: str


# A frame is itself the action "send this frame" (on the connection's reply queue).
Action = (
    Frame
    | Close
    | Attach
    | Commit
    | QueryHistory
    | QueryPresence
    | NoteAck
    | QueryMeta
    | QueryLocks
    | QueryWho
    | QueryWhere
)


def _event_size(event: Event) -> int:
    """An upper estimate of ``event``'s encoded size (base64 body in JSON, field names)."""
    return (
        (len(event.body) * 4) // 3
        + len(event.conv)
        + len(event.sender)
        + len(event.id)
        + len(event.enc)
        + len(event.dev)
        + 160
    )


def failure(exc: ProtocolError, rid: int | None = None, mid: str | None = None) -> Error | Close:
    """The action that reports ``exc``: an ``error`` frame, and a close if the code closes."""
    err = Error(code=int(exc.code), msg=exc.message, rid=rid, id=mid, rev=exc.rev)
    return Close(exc.code, err) if exc.code.closes else err


class ServerSession:
    """Per-connection protocol state and the meaning of every frame."""

    __slots__ = (
        "_bucket",
        "_rejections",
        "claims",
        "codec",
        "exp",
        "heartbeat_timeout_s",
        "inflight",
        "last_heard",
        "limits",
        "observer",
        "opened",
        "phase",
        "resolved",
        "secret_for",
    )

    def __init__(
        self,
        limits: SessionLimits,
        now: float,
        codec: Codec[ClientFrame] | None = None,
        secret_for: Callable[[str], str | Sequence[str] | None] | None = None,
        observer: SessionObserver = NULL_OBSERVER,
    ) -> None:
        self.limits = limits
        self.codec = codec
        self.secret_for = secret_for or (lambda app: None)
        self.observer = observer
        self.phase = Phase.AWAIT_HELLO
        self.opened = now
        self.last_heard = now
        self.heartbeat_timeout_s = 0.0  # agreed at login (negotiate_heartbeat); 0: the limit
        self.exp: float | None = None  # token expiry, wall seconds
        self.claims: Claims | None = None
        self.inflight = 0  # publishes submitted, not yet answered
        self.resolved: dict[str, Conversation] = {}
        self._bucket = TokenBucket(limits.publish_rate, limits.publish_burst, now)
        n = limits.flood_rejections  # the n-th refusal within the window closes
        self._rejections = TokenBucket(n / FLOOD_WINDOW_S, n - 1, now)

    # -- identity (valid once logged in) -------------------------------------------

    @property
    def app(self) -> str:
        return self.claims.app if self.claims is not None else ""

    @property
    def user(self) -> str:
        return self.claims.sub if self.claims is not None else ""

    # -- receiving -------------------------------------------------------------------

    def receive(self, data: bytes | str, now: float, wall_ms: int, sent: int = 0) -> Action | None:
        """Handle one WebSocket message from the client.

        ``now`` is monotonic seconds, ``wall_ms`` the server's wall clock in ms and
        ``sent`` the highest feed position already handed to the socket (acks may
        not pass it).  Returns what the shell must do, if anything.
        """
        assert self.codec is not None, "a receiving session needs a codec"
        max_frame = self.limits.max_frame
        size = len(data)
        if isinstance(data, str) and size * 4 > max_frame:
            # Text arrives decoded: measure its UTF-8 bytes, as the limit is in bytes
            # (a character count is a lower bound, four bytes each an upper one).
            size = len(data.encode("utf-8", "surrogatepass"))
        if size > max_frame:
            self.last_heard = now
            return failure(
                ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes; limit {max_frame}"
                )
            )
        frame: ClientFrame | None = None
        try:
            frame = self.codec.decode(data)
            err = self.admit(frame, now)
            if err is not None:
                raise err
            kind = frame.__class__
            if kind is Publish:  # the hot paths, one call less
                return self._publish(frame, now, wall_ms)  # type: ignore[arg-type]
            if kind is Ping:
                return Pong(ts=frame.ts, server_ts=wall_ms)  # type: ignore[union-attr]
            return self.handle(frame, now, wall_ms, sent)
        except ProtocolError as exc:
            return self.fail(exc, frame)

    def fail(self, exc: ProtocolError, frame: object = None) -> Error | Close:
        """Report ``exc`` for ``frame`` (its ``rid`` or publish ``id`` names it)."""
        rid = getattr(frame, "rid", None)
        mid = frame.id if isinstance(frame, Publish) else None
        if mid is not None:
            self.observer.publish_failed()
        return failure(exc, rid, mid)

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
                return self._rate_limited(
                    now, f"over {self.limits.publish_rate:g} publishes/s; retry later"
                )
        return None

    def _rate_limited(self, now: float, message: str) -> ProtocolError:
        """RATE_LIMITED, or FLOODING once rejections come faster than the flood bucket."""
        if not self._rejections.take(now):
            return ProtocolError(
                ErrorCode.FLOODING,
                f"{self.limits.flood_rejections} publishes refused within a second",
            )
        return ProtocolError(ErrorCode.RATE_LIMITED, message)

    def handle(self, frame: ClientFrame, now: float, wall_ms: int, sent: int) -> Action | None:
        """The meaning of an admitted frame (docs/protocol.md §5)."""
        if isinstance(frame, Publish):
            return self._publish(frame, now, wall_ms)
        if isinstance(frame, Ack):
            if frame.pos > sent:
                raise ProtocolError(
                    ErrorCode.INVALID_ARGUMENT, f"ack {frame.pos} is beyond what was sent ({sent})"
                )
            self.observer.acked(frame.pos)
            return NoteAck(frame.pos)
        if isinstance(frame, Ping):
            return Pong(ts=frame.ts, server_ts=wall_ms)
        if isinstance(frame, Hello):
            return self._hello(frame, wall_ms)
        if isinstance(frame, Probe):
            # Fire and forget: implausible reports are rejected or clamped and
            # counted by telemetry, never answered (docs/telemetry.md §probes).
            self.observer.probe(frame)
            return None
        if isinstance(frame, Read):
            conv = self._scoped(resolve(frame.conv, self.user))
            return Commit(ReadIntent(conv, frame.seq, wall_ms), Answer.NONE)
        if isinstance(frame, Delete):
            conv = self._scoped(resolve(frame.conv, self.user))
            return Commit(DeleteIntent(conv, frame.seq, wall_ms), Answer.OK, frame.rid)
        if isinstance(frame, Join):
            conv = self._scoped(channel_conversation(frame.channel))
            assert self.claims is not None
            grant = self.claims.grant_for(frame.channel)
            join = JoinIntent(
                conv, self.user, grant or "member", "grant" if grant else "public", wall_ms
            )
            return Commit(join, Answer.JOINED, frame.rid, None, frame.channel, conv.id)
        if isinstance(frame, Leave):
            conv = self._scoped(channel_conversation(frame.channel))
            return Commit(LeaveIntent(conv, wall_ms), Answer.OK, frame.rid)
        if isinstance(frame, Invite):
            conv = self._scoped(channel_conversation(frame.channel))
            if self.claims is not None and self.claims.confined:
                raise ProtocolError(ErrorCode.FORBIDDEN, "this token may not invite")
            invite = JoinIntent(conv, frame.user, frame.role, "invite", wall_ms)
            return Commit(invite, Answer.OK, frame.rid)
        if isinstance(frame, HistoryQuery):
            conv = self._scoped(resolve(frame.conv, self.user))
            return QueryHistory(frame.rid, conv, frame.before, frame.after, frame.limit)
        if isinstance(frame, PresenceQuery):
            claims = self.claims
            if claims is not None and claims.confined:
                hidden = [u for u in frame.users if not claims.may_see(u)]
                if hidden:
                    raise ProtocolError(
                        ErrorCode.FORBIDDEN, f"this token may not see the presence of {hidden[0]!r}"
                    )
            return QueryPresence(frame.rid, frame.users)
        if isinstance(frame, Refresh):
            return self._refresh(frame, wall_ms)
        if isinstance(frame, MetaSet):
            conv = self._meta_conversation(frame.scope, frame.target, write=True)
            intent = MetaIntent(
                conv,
                frame.scope,
                frame.target,
                frame.op,
                tuple(frame.items),
                frame.major,
                frame.lock,
                wall_ms,
            )
            return Commit(intent, Answer.META, frame.rid)
        if isinstance(frame, LockRequest):
            conv = self._scoped(channel_conversation(frame.channel))
            lock = LockIntent(conv, frame.op, frame.name, frame.ttl_s, frame.wait, wall_ms)
            return Commit(lock, Answer.LOCK, frame.rid)
        if isinstance(frame, LockQuery):
            return QueryLocks(frame.rid, self._scoped(channel_conversation(frame.channel)))
        if isinstance(frame, StateSet):
            conv = self._scoped(channel_conversation(frame.channel))
            state = StateIntent(conv, tuple(sorted(frame.state.items())), wall_ms)
            return Commit(state, Answer.OK, frame.rid)
        if isinstance(frame, WhoNow):
            return QueryWho(frame.rid, self._scoped(channel_conversation(frame.channel)))
        if isinstance(frame, WhereNow):
            claims = self.claims
            if claims is not None and claims.confined and not claims.may_see(frame.user):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not see {frame.user!r}")
            return QueryWhere(frame.rid, frame.user)
        if isinstance(frame, MetaGet):
            conv = self._meta_conversation(frame.scope, frame.target, write=False)
            member_of = conv.id if frame.scope == "channel" else ""
            return QueryMeta(frame.rid, frame.scope, frame.target, member_of)
        raise AssertionError(f"unhandled frame {type(frame).__name__}")  # pragma: no cover

    def _publish(self, frame: Publish, now: float, wall_ms: int) -> Commit:
        if self.inflight >= self.limits.max_inflight:
            raise self._rate_limited(now, "too many unacknowledged publishes")
        target = self.resolved.get(frame.to)
        if target is None:
            target = self._scoped(resolve(frame.to, self.user))
            if len(self.resolved) >= RESOLVED_MAX:
                self.resolved.clear()
            self.resolved[frame.to] = target
        self.inflight += 1
        return Commit(
            PublishIntent(target, frame.id, frame.body, frame.enc, wall_ms),
            Answer.PUBACK,
            None,
            frame.id,
            recv=now,
        )

    def _meta_conversation(self, scope: str, target: str, *, write: bool) -> Conversation:
        """Where changes of ``scope``:``target`` go, if this session may address it:
        the channel's conversation, or the user's own ``dm:U:U`` (§5.11)."""
        if scope == "channel":
            return self._scoped(channel_conversation(target))
        if write and target != self.user:
            raise ProtocolError(ErrorCode.FORBIDDEN, "users write only their own metadata")
        claims = self.claims
        if claims is not None and claims.confined and not claims.may_see(target):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not see user {target!r}")
        return resolve(f"user:{target}", target)

    def _scoped(self, conv: Conversation) -> Conversation:
        """``conv`` if this session's token may address it (FORBIDDEN otherwise)."""
        if self.claims is not None:
            check_scope(self.claims, conv)
        return conv

    def _hello(self, hello: Hello, wall_ms: int) -> Attach:
        try:
            claims = verify_token(hello.token, self.secret_for, now=wall_ms / 1000)
        except ProtocolError as exc:
            self.observer.login_refused(hello, exc.code)
            raise
        if claims.dev is not None and claims.dev != hello.device:
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "token is pinned to another device")
        return Attach(claims, hello)

    def _refresh(self, frame: Refresh, wall_ms: int) -> AuthOk:
        claims = verify_token(
            frame.token, self.secret_for, now=wall_ms / 1000, expected_app=self.app
        )
        if claims.sub != self.user:
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "refresh token is for another user")
        self.claims = claims
        self.exp = claims.exp
        self.resolved.clear()  # the new token's scope may differ
        return AuthOk(rid=frame.rid, exp=claims.exp)

    # -- completions from the shell --------------------------------------------------

    def welcome(
        self, claims: Claims, hello: Hello, cursor: int, session_id: str, wall_ms: int
    ) -> Welcome:
        """The device is attached: the session is live; the frame that says so."""
        self.logged_in(claims.exp)
        self.claims = claims
        lim = self.limits
        heartbeat_ms, self.heartbeat_timeout_s = negotiate_heartbeat(
            hello.hb, lim.heartbeat_ms, lim.heartbeat_timeout_s
        )
        return Welcome(
            user=claims.sub,
            device=hello.device,
            session=session_id,
            node=lim.node,
            region=lim.region,
            heartbeat_ms=heartbeat_ms,
            timeout_ms=round(self.heartbeat_timeout_s * 1000),
            server_ts=wall_ms,
            cursor=cursor,
            max_body=lim.max_body,
            max_frame=lim.max_frame,
            exp=claims.exp,
            publish_rate=int(lim.publish_rate),
        )

    def committed(
        self,
        commit: Commit,
        error: ProtocolError | None,
        event: Event | None = None,
        duplicate: bool = False,
        role: str = "",
    ) -> Frame | None:
        """The hub finished ``commit``: the frame that answers it, if any."""
        answer = commit.answer
        if answer is _PUBACK:
            self.inflight -= 1
            if error is not None:
                self.observer.publish_failed()
                return Error(code=int(error.code), msg=error.message, id=commit.id)
            assert event is not None and commit.id is not None
            self.observer.published(commit.recv, event.pos, event.conv, not duplicate)
            return PubAck(
                id=commit.id,
                conv=event.conv,
                seq=event.seq,
                pos=event.pos,
                ts=event.ts,
                dup=duplicate,
            )
        if error is not None:
            return Error(code=int(error.code), msg=error.message, rid=commit.rid, rev=error.rev)
        rid = commit.rid
        if answer is Answer.OK:
            assert rid is not None
            return Ok(rid=rid)
        if answer is Answer.JOINED:
            assert rid is not None
            return Joined(rid=rid, channel=commit.channel, conv=commit.conv, role=role)
        if answer is Answer.META:
            assert rid is not None and event is not None
            return MetaOk(rid=rid, major=event.seq, pos=event.pos)
        if answer is Answer.LOCK:
            assert rid is not None and event is not None
            change = decode_lock_change(event.body)
            return LockOk(
                rid=rid,
                name=change.name,
                holder=change.holder,
                queued=change.op == "queued" or self.user in change.waiters,
                pos=event.pos,
            )
        return None

    def history_page(self, query: QueryHistory, items: list[Event], more: bool) -> HistoryPage:
        """The ``history`` reply, cut to ``max_reply_bytes`` (docs/protocol.md §5.7).

        A cut page keeps the messages nearest the cursor it pages from (the newest for
        ``before`` or no cursor, the oldest for ``after``) and says ``more``, so a
        client pages on exactly as it would after a full page.
        """
        budget = self.limits.max_reply_bytes
        size = 0
        keep = 0
        ordered = items if query.after is not None else reversed(items)
        for event in ordered:
            size += _event_size(event)
            if size > budget and keep:
                break
            keep += 1
        if keep < len(items):
            more = True
            items = items[:keep] if query.after is not None else items[len(items) - keep :]
        return HistoryPage(rid=query.rid, conv=query.conv.id, items=items, more=more)

    def presence_state(self, query: QueryPresence, users: list[UserPresence]) -> PresenceState:
        return PresenceState(rid=query.rid, users=users)

    def who(self, query: QueryWho, users: list[OnlineMember]) -> Who:
        return Who(rid=query.rid, channel=query.channel.channel, users=users)

    def locks(self, query: QueryLocks, items: list[LockInfo]) -> Locks:
        return Locks(rid=query.rid, channel=query.channel.channel, items=items)

    def meta_state(self, query: QueryMeta, major: int, items: list[MetaItem]) -> MetaState:
        return MetaState(
            rid=query.rid, scope=query.scope, target=query.target, major=major, items=items
        )

    # -- phases and deadlines --------------------------------------------------------

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
            timeout_s = self.heartbeat_timeout_s or self.limits.heartbeat_timeout_s
            if mono_now - self.last_heard > timeout_s:
                return ProtocolError(
                    ErrorCode.HEARTBEAT_TIMEOUT,
                    f"nothing heard for {timeout_s:g}s",
                )
            if self.exp is not None and wall_now > self.exp:
                return ProtocolError(ErrorCode.TOKEN_EXPIRED, "token expired; refresh in time")
        return None
