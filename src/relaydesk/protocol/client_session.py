"""Client-side session state machine, sans I/O (docs/protocol.md §3-§6).

Theory of operation
-------------------
``ClientSession`` is the whole client protocol as a plain object: the asyncio
shell (``relaydesk.client``) feeds it decoded frames and transport happenings,
and reads back frames to send, completions for pending calls, and feed items
for the application.  It imports no asyncio, no socket and no clock: every
method that depends on time takes ``now`` (monotonic seconds) and, where a wall
time goes on the wire, ``wall_ms``.

Connection phases and every legal transition live in ``TRANSITIONS``, one table
keyed by ``(Phase, Input)``; anything not in the table is a bug in the shell
and raises ``LocalProtocolError``.  ``Phase`` is finer than the public
``ConnectionState`` (``public_state`` maps one onto the other)::

    DOWN --OPEN--> HELLO_SENT --WELCOME--> CATCHING_UP --SYNCED--> LIVE
      ^                |                        |                    |
      +------LOST------+------------LOST--------+--------LOST--------+
    any live phase --FATAL--> FAILED         any phase --CLOSE--> CLOSED

Delivery duties (§5):

* **Outbox.**  ``send`` files a publish under its client message id; the entry
  stays until a ``puback`` (or the echo of the message in our own feed, §5.4)
  confirms it.  At most ``window`` publishes are in flight per connection; the
  rest wait in id order.  After a reconnect every unconfirmed entry is sent
  again, in the original order, with the same id: the server deduplicates on
  it, so a message is committed once whatever happened to the earlier copy.
  ``RATE_LIMITED`` puts the entry back in line (ahead of every later entry, so
  it is retried before them) and pauses publishing for a jittered back-off.
* **Pacing.**  Publishes leave through a token bucket at just under the server's
  per-connection rate (``welcome.publish_rate`` when the server advertises it,
  else ``SessionConfig.publish_rate``, else the documented 500/s), holding half a
  second's worth: a reconnect with thousands of messages in the outbox sends
  them at the rate the server accepts instead of collecting ``RATE_LIMITED``
  for most of them (docs/protocol.md §5.2).  The bucket refills with ``now``;
  ``next_deadline`` says when the next token is due.  The outbox is bounded
  (``outbox_limit``); ``send`` refuses with ``OUTBOX_FULL`` beyond it and the
  shell waits for room.
* **Receive dedup.**  The feed arrives in position order, at least once.  An
  event at or below ``received_pos`` is a redelivery and is skipped; a ``msg``
  event whose per-conversation ``seq`` is not above the last one seen is
  skipped as well (belt and braces against a replay under another position).
* **Echo.**  An event sent by this user from this device confirms the outbox
  entry with its id and is not surfaced; the same user's other devices are.
* **Feed buffer and slow consumers.**  Accepted items wait in a bounded buffer
  (``buffer_limit``) until the application takes them (``next_item``).  When it
  is full, later feed events are *not* accepted (``received_pos`` stays put)
  and the session is marked ``overflowed``; once the application has drained
  half the buffer, ``resync_wanted`` asks the shell to reconnect, and the
  server replays from ``received_pos``.  Memory stays bounded, nothing is lost,
  and replies/pubacks keep flowing meanwhile.  Presence pushes that do not fit
  are dropped and counted: they are a snapshot, not history.
* **Cumulative ack.**  ``processed_pos`` is the position up to which the
  application has taken (or the session has skipped) the feed.  Acks are
  coalesced: one ``ack`` after ``ack_every`` processed events or ``ack_delay``
  seconds, whichever comes first, never per event (§5.3).
* **Requests.**  Each request frame gets a fresh ``rid``; replies (``ok``,
  ``joined``, ``history``, ``presence_state``, ``auth_ok``, ``error``) are
  matched by it.  Requests pending when the link drops are sent again after
  the next ``welcome``.
* **Heartbeat (§6).**  A ``ping`` every ``heartbeat_s``; any frame from the
  server proves liveness, and silence for ``timeout_s`` means the link is dead.
  Round-trip time and clock skew come from ``pong``.
* **Reconnect.**  ``backoff_delay`` is the pure full-jitter policy; close codes
  4010/4012 (and 4011 without a token provider) are fatal: no reconnect loop.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    Ack,
    AuthOk,
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
    LockOk,
    LockQuery,
    LockRequest,
    Locks,
    Messages,
    MetaGet,
    MetaOk,
    MetaSet,
    MetaState,
    Moved,
    Ok,
    Ping,
    Pong,
    PresenceChange,
    PresenceQuery,
    PresenceState,
    Probe,
    PubAck,
    Publish,
    Read,
    Refresh,
    ServerFrame,
    StateSet,
    Synced,
    Welcome,
    Where,
    WhereNow,
    Who,
    WhoNow,
)

# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Full-jitter exponential back-off: ``uniform(0, min(max_s, base_s * 2**attempt))``.

    ``max_attempts`` of ``None`` retries for ever; otherwise the client gives up
    (state FAILED) after that many consecutive failed attempts.
    """

    base_s: float = 0.25
    max_s: float = 10.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s:
            raise ValueError("need 0 < base_s <= max_s")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be positive or None")


def backoff_delay(attempt: int, policy: ReconnectPolicy, rand: Callable[[], float]) -> float:
    """Seconds to wait before attempt number ``attempt`` (0-based); ``rand`` is in [0, 1).

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the
    expected delay grows exponentially, and a herd of clients dropped at the same
    instant spreads over the whole window instead of reconnecting in lock-step.
    """
    ceiling = min(policy.max_s, policy.base_s * (2.0 ** min(attempt, 62)))
    return ceiling * rand()


RATE_LIMIT_BACKOFF = ReconnectPolicy(base_s=0.05, max_s=2.0)
"""Back-off of the outbox after ``RATE_LIMITED`` (docs/protocol.md §7)."""

DEFAULT_PUBLISH_RATE = 500.0
# Least time a ping may stay unanswered before the link counts as dead: over a lossy
# mobile link TCP retransmits (RTO at least 200 ms, doubling) can hold a pong for
# seconds on a live connection; a reconnect costs more than waiting this long.
PONG_WAIT_MIN_S = 5.0
"""Publishes/s per connection a server accepts by default (docs/protocol.md §8.1)."""
# The session paces a little under the server's rate (its bucket refills by the
# frames' arrival times, which jitter) and spends at most half a second's worth at
# once (the server's default burst is two seconds' worth).
PACE_SHARE = 0.95
PACE_BURST_S = 0.5


class Pacer:
    """A token bucket: ``rate`` tokens per second, at most ``capacity``; pure (``now``
    passed in).  Starts full."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate * PACE_SHARE
        self.capacity = max(1.0, self.rate * PACE_BURST_S)
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def next_token(self, now: float) -> float:
        """When the next token is due (``now`` if one is there)."""
        self._refill(now)
        return now if self.tokens >= 1.0 else now + (1.0 - self.tokens) / self.rate

    def refused(self, now: float) -> None:
        """The server refused for rate (once per back-off round): start again from empty,
        with half the burst and a tenth less rate, so that a server whose bucket is
        smaller than advertised stops refusing after a few rounds (until the next
        connection starts afresh)."""
        self._refill(now)
        self.tokens = 0.0
        self.capacity = max(1.0, self.capacity / 2)
        self.rate = max(1.0, self.rate * 0.9)


#: Closes after which reconnecting cannot help.  DEVICE_REPLACED: another process logged
#: in with this device id; reconnecting would take the device back and forth for ever
#: (docs/protocol.md §3.4).
FATAL_CODES = frozenset(
    {ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_WRONG_APP, ErrorCode.DEVICE_REPLACED}
)


# --------------------------------------------------------------------------- states


class ConnectionState(enum.Enum):
    """The connection state an application sees (``Client.state``)."""

    CONNECTING = "connecting"  # first connection not yet logged in
    CONNECTED = "connected"  # logged in, catching up on the feed
    SYNCED = "synced"  # caught up; the feed is live
    RECONNECTING = "reconnecting"  # link lost; waiting or logging in again
    CLOSED = "closed"  # closed by the application
    FAILED = "failed"  # cannot continue (bad token, attempts exhausted)


class Phase(enum.Enum):
    DOWN = "down"
    HELLO_SENT = "hello_sent"
    CATCHING_UP = "catching_up"
    LIVE = "live"
    CLOSED = "closed"
    FAILED = "failed"


class Input(enum.Enum):
    OPEN = "open"  # transport connected; hello goes out
    WELCOME = "welcome"
    SYNCED = "synced"
    LOST = "lost"  # transport closed or declared dead
    FATAL = "fatal"  # unrecoverable: no reconnect
    CLOSE = "close"  # the application closes


_UP = (Phase.HELLO_SENT, Phase.CATCHING_UP, Phase.LIVE)
TRANSITIONS: dict[tuple[Phase, Input], Phase] = {
    (Phase.DOWN, Input.OPEN): Phase.HELLO_SENT,
    (Phase.HELLO_SENT, Input.WELCOME): Phase.CATCHING_UP,
    (Phase.CATCHING_UP, Input.SYNCED): Phase.LIVE,
    (Phase.LIVE, Input.SYNCED): Phase.LIVE,  # a server may re-announce after a resync
    **{(p, Input.LOST): Phase.DOWN for p in (Phase.DOWN, *_UP)},
    **{(p, Input.FATAL): Phase.FAILED for p in (Phase.DOWN, *_UP)},
    **{(p, Input.CLOSE): Phase.CLOSED for p in Phase},
}


class LocalProtocolError(Exception):
    """The shell drove the session through a transition the table does not allow."""


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class SendDone:
    """The publish ``id`` is durably committed (from a puback or its echo)."""

    id: str
    conv: str
    seq: int
    pos: int
    ts: int
    dup: bool


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The publish ``id`` was refused for good; it left the outbox."""

    id: str
    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The reply to request ``rid``."""

    rid: int
    frame: (
        Ok
        | Joined
        | HistoryPage
        | PresenceState
        | AuthOk
        | MetaState
        | MetaOk
        | LockOk
        | Locks
        | Who
        | Where
    )


@dataclass(frozen=True, slots=True)
class RequestFailed:
    rid: int
    code: int
    msg: str
    rev: int | None = None  # REVISION_CONFLICT: the current revision


Completion = SendDone | SendFailed | ReplyReceived | RequestFailed
# Frames that answer a request (by ``rid``).
_REPLIES = (
    Ok,
    Joined,
    HistoryPage,
    PresenceState,
    AuthOk,
    MetaState,
    MetaOk,
    LockOk,
    Locks,
    Who,
    Where,
)
FeedItem = Event | PresenceChange
Request = (
    Delete
    | Join
    | Leave
    | Invite
    | HistoryQuery
    | PresenceQuery
    | Refresh
    | MetaSet
    | MetaGet
    | LockRequest
    | LockQuery
    | StateSet
    | WhoNow
    | WhereNow
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Tunables of the client session; every bound states why it is that size."""

    device: str
    user: str = ""  # learnt from ``welcome`` when empty
    sdk: str = "relaydesk-python/0.1.0"
    region: str = ""
    net: str = ""
    # Publishes in flight per connection.  Enough to keep the group commit busy
    # on a loopback or LAN link; small enough to stay under the server's burst.
    window: int = 256
    # Unconfirmed messages the outbox holds.  Past it ``send`` waits for room, so
    # a producer faster than the server is slowed, never buffered without bound.
    outbox_limit: int = 10_000
    # Feed items waiting for the application.  Past it the session resyncs.
    buffer_limit: int = 10_000
    ack_every: int = 64
    ack_delay: float = 0.1
    # Before the first welcome the heartbeat is unknown: give login this long.
    handshake_timeout: float = 10.0
    heartbeat_s: float | None = None  # None: the server's heartbeat_ms
    timeout_s: float | None = None  # None: the server's timeout_ms
    # Mobile liveness (docs/protocol.md §6.2).  ``heartbeat_s`` is also asked of the
    # server (``hello.hb``), which clamps it and times out after three intervals.
    # A ping unanswered for ``pong_wait_s`` (None: four RTTs, at least
    # PONG_WAIT_MIN_S, at most the timeout) with nothing else heard means a dead link:
    # reconnect at once instead of waiting out the whole silence timeout.
    pong_wait_s: float | None = None
    # A connection that stayed synced this long was stable: the back-off starts over.
    # Shorter-lived ones keep backing off, so a flapping link does not reconnect in a
    # tight loop just because each attempt reached ``synced``.
    stable_s: float = 10.0
    has_token_provider: bool = False
    # Publishes per second to pace to when the server does not advertise its rate in
    # ``welcome.publish_rate``; None: the documented default (DEFAULT_PUBLISH_RATE).
    publish_rate: float | None = None
    max_reconnect_attempts: int | None = None  # None: for ever
    surface: bool = True  # False: a send-only client; the feed is skipped, not buffered
    # Network-quality probes (docs/telemetry.md): every ``probe_interval_s`` a
    # round of ``probe_count`` pings ``probe_spacing_s`` apart; a ping unanswered
    # after ``probe_timeout_s`` counts as lost.  Off (None) by default.
    probe_interval_s: float | None = None
    probe_count: int = 10
    probe_spacing_s: float = 0.2
    probe_timeout_s: float = 2.0


@dataclass(slots=True)
class _Entry:
    n: int  # order of filing: resend order
    frame: Publish
    inflight: bool = False


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A frozen snapshot of counters (trio-style ``statistics()``)."""

    phase: Phase
    received_pos: int
    processed_pos: int
    acked_pos: int
    outbox: int
    inflight: int
    buffered: int
    duplicates_skipped: int
    echoes: int
    presence_dropped: int
    resyncs: int
    rate_limited: int
    connects: int
    paced: int  # times the outbox waited for the publish rate
    network_changes: int = 0  # network_changed() calls (docs/protocol.md §6.2)
    missed_pongs: int = 0  # links dropped because a ping went unanswered


@dataclass(slots=True)
class _Counters:
    duplicates_skipped: int = 0
    echoes: int = 0
    presence_dropped: int = 0
    resyncs: int = 0
    rate_limited: int = 0
    connects: int = 0
    paced: int = 0
    network_changes: int = 0
    missed_pongs: int = 0


@dataclass(slots=True)
class _Link:
    """Per-connection state, reset on every OPEN."""

    opened_at: float = 0.0
    last_heard: float = 0.0
    last_ping: float = 0.0
    pings: dict[int, float] = field(default_factory=dict)  # ping ts -> monotonic send time
    inflight: int = 0
    close_code: int | None = None
    synced_at: float | None = None  # when the feed was first synced on this link
    dead: bool = False  # the shell must drop it (network change, missed pong)


# --------------------------------------------------------------------------- session


class ClientSession:
    """The client protocol of one logical session (many transport connections)."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        cursor: int | None = None,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.user = config.user
        self.phase = Phase.DOWN
        self._ever_welcomed = False
        # Feed positions (§4.2): every event <= received_pos is buffered or skipped;
        # every event <= processed_pos has been taken by the application.
        self.start_cursor = cursor
        self.received_pos = cursor or 0
        self.processed_pos = cursor or 0
        self.acked_pos = cursor or 0
        self._unacked = 0
        self._unacked_since: float | None = None
        self._last_seq: dict[str, int] = {}
        self._buffer: deque[FeedItem] = deque()
        self._buf_events = 0  # Events (not presence pushes) in the buffer
        self.overflowed = False
        self._out: list[Frame] = []
        self._done: list[Completion] = []
        # Outbox: id -> entry in filing order; a heap of (n, id) waiting to go out.
        self._outbox: dict[str, _Entry] = {}
        self._ready: list[tuple[int, str]] = []
        self._n = 0
        self._paused_until = 0.0
        self._rl_attempt = 0
        self._pacer = Pacer(config.publish_rate or DEFAULT_PUBLISH_RATE, 0.0)
        # Requests: rid -> frame, resent after a reconnect.
        self._pending: dict[int, Request] = {}
        self._rid = 0
        self._rand = rand or (lambda: 0.5)
        self._link = _Link()
        self.welcome: Welcome | None = None
        self.exp: int | None = None  # token expiry, wall seconds
        self.rtt: float | None = None  # seconds
        self.clock_skew_ms: float | None = None  # server clock minus ours
        self.attempt = 0  # consecutive failed connection attempts
        self.moved: Moved | None = None  # the last drain notice (where to go)
        self._move_now = False  # moved off a draining node: reconnect without waiting
        self._reconnect_now = False  # a network change or a missed pong: no back-off
        self.last_error: Error | None = None
        self._counters = _Counters()
        # Probe round: ping ts -> send time, RTT samples, pings left to send.
        self._probe_sent: dict[int, float] = {}
        self._probe_rtts: list[float] = []
        self._probe_left = 0
        self._probe_pings = 0
        self._probe_last = 0.0
        self._probe_next: float | None = None

    # -- state -------------------------------------------------------------------

    def _go(self, inp: Input) -> None:
        try:
            self.phase = TRANSITIONS[(self.phase, inp)]
        except KeyError:
            msg = f"{inp.name} is not allowed in phase {self.phase.name}"
            raise LocalProtocolError(msg) from None

    @property
    def state(self) -> ConnectionState:
        """The public state for this phase."""
        if self.phase is Phase.CATCHING_UP:
            return ConnectionState.CONNECTED
        if self.phase is Phase.LIVE:
            return ConnectionState.SYNCED
        if self.phase is Phase.CLOSED:
            return ConnectionState.CLOSED
        if self.phase is Phase.FAILED:
            return ConnectionState.FAILED
        return ConnectionState.RECONNECTING if self._ever_welcomed else ConnectionState.CONNECTING

    @property
    def logged_in(self) -> bool:
        return self.phase in (Phase.CATCHING_UP, Phase.LIVE)

    @property
    def terminal(self) -> bool:
        return self.phase in (Phase.CLOSED, Phase.FAILED)

    def statistics(self) -> SessionStats:
        c = self._counters
        return SessionStats(
            phase=self.phase,
            received_pos=self.received_pos,
            processed_pos=self.processed_pos,
            acked_pos=self.acked_pos,
            outbox=len(self._outbox),
            inflight=self._link.inflight,
            buffered=len(self._buffer),
            duplicates_skipped=c.duplicates_skipped,
            echoes=c.echoes,
            presence_dropped=c.presence_dropped,
            resyncs=c.resyncs,
            rate_limited=c.rate_limited,
            connects=c.connects,
            paced=c.paced,
            network_changes=c.network_changes,
            missed_pongs=c.missed_pongs,
        )

    # -- outputs -----------------------------------------------------------------

    def take_outgoing(self) -> list[Frame]:
        """Frames to write, in order; the caller owns the list."""
        out, self._out = self._out, []
        return out

    def take_completions(self) -> list[Completion]:
        done, self._done = self._done, []
        return done

    def next_item(self, now: float) -> FeedItem | None:
        """The next feed item for the application, which thereby processes it."""
        if not self._buffer:
            return None
        item = self._buffer.popleft()
        if isinstance(item, Event):
            self._buf_events -= 1
            # Events skipped behind this one are covered once no event waits before them.
            self._processed(item.pos if self._buf_events else self.received_pos, now)
        return item

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def resync_wanted(self) -> bool:
        """The buffer overflowed and has drained: reconnect to replay the rest."""
        return (
            self.overflowed
            and self.logged_in
            and len(self._buffer) <= self.config.buffer_limit // 2
        )

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    @property
    def outbox_full(self) -> bool:
        return len(self._outbox) >= self.config.outbox_limit

    def unconfirmed(self) -> list[Publish]:
        """Every publish not yet confirmed, in filing order."""
        return [e.frame for e in sorted(self._outbox.values(), key=lambda e: e.n)]

    # -- transport happenings ----------------------------------------------------

    def connection_opened(self, token: str, now: float) -> None:
        """The transport is up: send ``hello`` resuming after ``received_pos``."""
        self._go(Input.OPEN)
        self._counters.connects += 1
        self._link = _Link(opened_at=now, last_heard=now, last_ping=now)
        self._probe_sent.clear()  # a probe round never spans two connections
        self._probe_left = self._probe_pings = 0
        self._probe_next = None
        # Within this process the buffer survives a reconnect, so resume after what
        # was received; a fresh process passes the stored processed cursor (§4.2).
        cursor = (
            self.received_pos if (self._ever_welcomed or self.start_cursor is not None) else None
        )
        self._out.append(
            Hello(
                token=token,
                device=self.config.device,
                cursor=cursor,
                sdk=self.config.sdk,
                region=self.config.region,
                net=self.config.net,
                hb=round(self.config.heartbeat_s * 1000) if self.config.heartbeat_s else None,
            )
        )

    def connection_lost(self, code: int | None, now: float, *, elsewhere: bool = True) -> None:
        """The transport closed (``code`` from the close frame, if any).

        Decides between reconnecting (phase DOWN) and giving up (FAILED).
        ``elsewhere``: another node is there to try (after a drain, 4061): then the
        reconnect is at once; with nowhere else to go it backs off as after a failure,
        so the clients of a lone draining node do not storm it.
        """
        if self.terminal:
            return
        self._link.close_code = code
        fatal = code in FATAL_CODES or (
            code == ErrorCode.TOKEN_EXPIRED and not self.config.has_token_provider
        )
        if fatal:
            self._go(Input.FATAL)
            self._fail_everything(code or ErrorCode.TOKEN_INVALID, "connection refused for good")
            return
        self._go(Input.LOST)
        link = self._link
        if link.synced_at is not None and now - link.synced_at >= self.config.stable_s:
            self.attempt = 0  # it was a stable connection: the back-off starts over
        if link.dead:
            self._reconnect_now = True
        if code == ErrorCode.SERVER_DRAINING and elsewhere:
            # Moved off a draining node: reconnect at once, to another node, without
            # counting it as a failure (docs/protocol.md §3.6).
            self._move_now = True
        else:
            self.attempt += 1  # back to 0 after a stable connection (``stable_s``)
        self.overflowed = False
        # Everything in flight goes back in line, in filing order.
        self._ready = [(e.n, i) for i, e in self._outbox.items()]
        heapq.heapify(self._ready)
        for entry in self._outbox.values():
            entry.inflight = False
        self._link.inflight = 0
        self._paused_until = 0.0
        self._out.clear()  # an unwritten ack is repeated after the next welcome
        limit = self.config.max_reconnect_attempts
        if limit is not None and self.attempt > limit:
            self._go(Input.FATAL)
            self._fail_everything(ErrorCode.INTERNAL, "reconnect attempts exhausted")

    def reconnect_delay(self, policy: ReconnectPolicy) -> float:
        """Seconds to wait before the next connection attempt (jittered even the first);
        none after a drain notice."""
        if self._move_now or self._reconnect_now:
            self._move_now = self._reconnect_now = False
            return 0.0
        return backoff_delay(max(0, self.attempt - 1), policy, self._rand)

    def close(self) -> None:
        """The application closes: pending calls fail, nothing more is sent."""
        if self.phase is Phase.CLOSED:
            return
        self._go(Input.CLOSE)
        self._fail_everything(ErrorCode.INTERNAL, "client closed")
        self._out.clear()

    def _fail_everything(self, code: int, msg: str) -> None:
        for mid in list(self._outbox):
            self._done.append(SendFailed(mid, int(code), msg))
        self._outbox.clear()
        self._ready.clear()
        for rid in list(self._pending):
            self._done.append(RequestFailed(rid, int(code), msg))
        self._pending.clear()

    # -- application calls -------------------------------------------------------

    def send(self, frame: Publish, now: float) -> ErrorCode | None:
        """File ``frame`` in the outbox; ``OUTBOX_FULL`` or a closed session refuse it."""
        if self.terminal:
            return ErrorCode.INTERNAL
        if frame.id in self._outbox:
            return ErrorCode.DUPLICATE_ID_MISMATCH
        if self.outbox_full:
            return ErrorCode.OUTBOX_FULL
        self._n += 1
        self._outbox[frame.id] = _Entry(self._n, frame)
        heapq.heappush(self._ready, (self._n, frame.id))
        self._pump(now)
        return None

    def next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def request(self, frame: Request) -> None:
        """Send a request frame (its ``rid`` from ``next_rid``); the reply completes it."""
        if self.terminal:
            self._done.append(RequestFailed(frame.rid, int(ErrorCode.INTERNAL), "client closed"))
            return
        self._pending[frame.rid] = frame
        if self.logged_in:
            self._out.append(frame)

    def flush_ack(self) -> bool:
        """Acknowledge what is processed now (the application is closing)."""
        if not self.logged_in or self.processed_pos <= self.acked_pos:
            return False
        self._out.append(Ack(pos=self.processed_pos))
        self.acked_pos = self.processed_pos
        self._unacked, self._unacked_since = 0, None
        return True

    def mark_read(self, conv: str, seq: int) -> bool:
        """Send a read marker; fire-and-forget (§5.5).  False if not connected."""
        if not self.logged_in:
            return False
        self._out.append(Read(conv=conv, seq=seq))
        return True

    # -- frames from the server --------------------------------------------------

    def receive(self, frame: ServerFrame, now: float) -> None:
        """Handle one decoded frame from the server."""
        if self.terminal:
            return
        self._link.last_heard = now
        if isinstance(frame, Messages):
            for event in frame.items:
                self._feed(event, now)
        elif isinstance(frame, PubAck):
            self._confirm(SendDone(frame.id, frame.conv, frame.seq, frame.pos, frame.ts, frame.dup))
            self._rl_attempt = 0
            self._pump(now)
        elif isinstance(frame, Error):
            self._error(frame, now)
        elif isinstance(frame, Pong):
            probe_sent = self._probe_sent.pop(frame.ts, None)
            if probe_sent is not None:  # also a fresh RTT and skew sample
                self.rtt = max(0.0, now - probe_sent)
                self.clock_skew_ms = frame.server_ts - (frame.ts + self.rtt * 500.0)
                if self.rtt <= self.config.probe_timeout_s:
                    self._probe_rtts.append(self.rtt)
                # else: answered too late; it counts as lost in this round
            sent = self._link.pings.pop(frame.ts, None)
            if sent is not None:
                self.rtt = max(0.0, now - sent)
                self.clock_skew_ms = frame.server_ts - (frame.ts + self.rtt * 500.0)
        elif isinstance(frame, _REPLIES):
            if self._pending.pop(frame.rid, None) is not None:
                if isinstance(frame, AuthOk):
                    self.exp = frame.exp
                self._done.append(ReplyReceived(frame.rid, frame))
        elif isinstance(frame, PresenceChange):
            if not self.config.surface:
                return
            if len(self._buffer) >= self.config.buffer_limit:
                self._counters.presence_dropped += 1
            else:
                self._buffer.append(frame)
        elif isinstance(frame, Synced):
            if self.phase is Phase.CATCHING_UP or self.phase is Phase.LIVE:
                self._go(Input.SYNCED)
                if self._link.synced_at is None:
                    self._link.synced_at = now
        elif isinstance(frame, Welcome):
            self._welcome(frame, now)
        elif isinstance(frame, Moved):
            # The node is draining; its close (4061) follows.  Keep where it says to go.
            self.moved = frame

    def _welcome(self, frame: Welcome, now: float) -> None:
        self._go(Input.WELCOME)
        self._ever_welcomed = True
        self.welcome = frame
        self.user = frame.user
        self.exp = frame.exp
        self.last_error = None
        # The server resumes after welcome.cursor; nothing at or below it will come.
        if frame.cursor > self.received_pos and not self._buffer:
            # The server knows a later cursor (another process of this device acked):
            # take it as processed, there is nothing for us below it.
            self.received_pos = self.processed_pos = self.acked_pos = frame.cursor
        self._link.last_ping = now
        # A fresh connection has a fresh bucket on the server: pace to its rate.
        rate = frame.publish_rate or self.config.publish_rate or DEFAULT_PUBLISH_RATE
        self._pacer = Pacer(float(rate), now)
        if self.processed_pos and frame.cursor:
            # The last ack may have died with the previous link: repeat it once (never
            # beyond the resume point: the server refuses acks past what it sent).
            self._out.append(Ack(pos=min(self.processed_pos, frame.cursor)))
            self.acked_pos = self.processed_pos
            self._unacked, self._unacked_since = 0, None
        for rid in sorted(self._pending):
            self._out.append(self._pending[rid])
        self._pump(now)

    def _error(self, frame: Error, now: float) -> None:
        if frame.id is not None and frame.id in self._outbox:
            entry = self._outbox[frame.id]
            if entry.inflight:
                entry.inflight = False
                self._link.inflight = max(0, self._link.inflight - 1)
            if frame.code in (ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL):
                # Back in line in filing order; publishing pauses for a while.
                self._counters.rate_limited += 1
                heapq.heappush(self._ready, (entry.n, frame.id))
                if now >= self._paused_until:
                    self._pacer.refused(now)
                    # One back-off step per round: the rest of a window refused in the
                    # same burst is the same signal, not a harder one.
                    self._paused_until = (
                        now
                        + RATE_LIMIT_BACKOFF.base_s
                        + backoff_delay(self._rl_attempt, RATE_LIMIT_BACKOFF, self._rand)
                    )
                    self._rl_attempt += 1
            else:
                del self._outbox[frame.id]
                self._done.append(SendFailed(frame.id, frame.code, frame.msg))
                self._pump(now)
            return
        if frame.rid is not None and frame.rid in self._pending:
            del self._pending[frame.rid]
            self._done.append(RequestFailed(frame.rid, frame.code, frame.msg, frame.rev))
            return
        # A connection-level error: a close follows when ``code.closes`` (§7).
        self.last_error = frame

    def _confirm(self, done: SendDone) -> None:
        entry = self._outbox.pop(done.id, None)
        if entry is None:
            return  # already confirmed by its echo (or its puback)
        if entry.inflight:
            self._link.inflight = max(0, self._link.inflight - 1)
        self._done.append(done)

    def _feed(self, event: Event, now: float) -> None:
        if event.pos <= self.received_pos:
            self._counters.duplicates_skipped += 1
            return
        if self.overflowed:
            return  # not accepted: replayed after the resync
        if event.kind == "msg" and event.seq <= self._last_seq.get(event.conv, 0):
            self._counters.duplicates_skipped += 1
            self._accept_skipped(event.pos, now)
            return
        mine = event.sender == self.user and event.dev == self.config.device
        skip = (mine and event.kind in ("msg", "read", "del")) or not self.config.surface
        if not skip and len(self._buffer) >= self.config.buffer_limit:
            # Not accepted, nothing recorded: the resync replays it from here.
            self.overflowed = True
            self._counters.resyncs += 1
            return
        if event.kind == "msg":
            self._last_seq[event.conv] = event.seq
        if mine and event.kind == "msg":
            # A later puback for this id finds no entry and is ignored.
            self._confirm(SendDone(event.id, event.conv, event.seq, event.pos, event.ts, False))
        if skip:
            if mine:
                self._counters.echoes += 1
            self._accept_skipped(event.pos, now)
            return
        self.received_pos = event.pos
        self._buffer.append(event)
        self._buf_events += 1

    def _accept_skipped(self, pos: int, now: float) -> None:
        """An event the application never sees: processed once all before it are."""
        self.received_pos = pos
        if not self._buf_events:
            self._processed(pos, now)

    def _processed(self, pos: int, now: float) -> None:
        if pos > self.processed_pos:
            self.processed_pos = pos
            self._unacked += 1
            if self._unacked_since is None:
                self._unacked_since = now

    # -- time --------------------------------------------------------------------

    def _heartbeat_s(self) -> float:
        if self.config.heartbeat_s is not None:
            return self.config.heartbeat_s
        return self.welcome.heartbeat_ms / 1000.0 if self.welcome else 10.0

    def _timeout_s(self) -> float:
        if self.config.timeout_s is not None:
            return self.config.timeout_s
        return self.welcome.timeout_ms / 1000.0 if self.welcome else 30.0

    def _pong_wait_s(self) -> float:
        if self.config.pong_wait_s is not None:
            return self.config.pong_wait_s
        rtt = self.rtt if self.rtt is not None else 0.0
        return min(self._timeout_s(), max(PONG_WAIT_MIN_S, 4 * rtt))

    def network_changed(self, now: float) -> None:
        """The device changed networks (Wi-Fi to cellular, a new address): the link's
        TCP connection is most likely dead; drop it and reconnect at once, resuming
        from the cursor (docs/protocol.md §6.2).  Down already: retry without waiting."""
        if self.terminal:
            return
        self._counters.network_changes += 1
        if self.phase is Phase.DOWN:
            self._reconnect_now = True
            return
        self._link.dead = True

    # -- probes ---------------------------------------------------------------------

    def _probe_step(self, now: float, wall_ms: int) -> None:
        """Start, continue or finish a probe round (only while logged in)."""
        cfg = self.config
        if cfg.probe_interval_s is None:
            return
        if self._probe_next is None:
            self._probe_next = now + cfg.probe_spacing_s
        if self._probe_left == 0 and self._probe_pings == 0:
            if now < self._probe_next:
                return
            self._probe_left = cfg.probe_count
            self._probe_rtts.clear()
            self._probe_sent.clear()
        if self._probe_left > 0:
            if self._probe_pings == 0 or now - self._probe_last >= cfg.probe_spacing_s:
                ts = wall_ms
                while ts in self._probe_sent or ts in self._link.pings:
                    ts += 1
                self._probe_sent[ts] = now
                self._probe_last = now
                self._probe_left -= 1
                self._probe_pings += 1
                self._out.append(Ping(ts=ts))
            return
        if self._probe_sent and now - self._probe_last < cfg.probe_timeout_s:
            return  # still waiting for the last answers
        self._out.append(self._probe_report(wall_ms))
        self._probe_pings = 0
        self._probe_sent.clear()
        self._probe_next = now + cfg.probe_interval_s

    def _probe_report(self, wall_ms: int) -> Probe:
        rtts = sorted(self._probe_rtts)
        sent = self._probe_pings
        lost = sent - len(rtts)

        def pct(q: float) -> float:
            return rtts[min(len(rtts) - 1, int(q * len(rtts)))] * 1000.0 if rtts else 0.0

        ordered = self._probe_rtts
        jitter = (
            sum(abs(b - a) for a, b in itertools.pairwise(ordered)) / (len(ordered) - 1) * 1000.0
            if len(ordered) > 1
            else 0.0
        )
        cfg = self.config
        return Probe(
            rtt_p50_ms=pct(0.5),
            rtt_p95_ms=pct(0.95),
            loss=lost / sent if sent else 0.0,
            samples=sent,
            jitter_ms=jitter,
            net=cfg.net,
            sdk=cfg.sdk,
            region=cfg.region,
            ts=wall_ms,
        )

    def _probe_due(self) -> float | None:
        cfg = self.config
        if cfg.probe_interval_s is None or not self.logged_in:
            return None
        if self._probe_left > 0:
            return self._probe_last + cfg.probe_spacing_s
        if self._probe_pings > 0:
            return self._probe_last + cfg.probe_timeout_s
        return self._probe_next

    def poll(self, now: float, wall_ms: int) -> bool:
        """Do what is due at ``now``: pings, coalesced acks, paused publishes.

        Returns False when the link is dead (no welcome within the handshake
        timeout, or silence for the heartbeat timeout): the shell closes it.
        """
        link = self._link
        if self.phase is Phase.HELLO_SENT:
            return now - link.opened_at <= self.config.handshake_timeout
        if link.dead:
            return False
        if not self.logged_in:
            return True
        if now - link.last_heard > self._timeout_s():
            return False
        if link.pings:
            sent = min(link.pings.values())
            if link.last_heard < sent and now - sent > self._pong_wait_s():
                link.dead = True  # the ping went out and nothing came back: dead link
                self._counters.missed_pongs += 1
                return False
        if now - link.last_ping >= self._heartbeat_s():
            link.last_ping = now
            ts = wall_ms
            while ts in link.pings:
                ts += 1
            link.pings[ts] = now
            if len(link.pings) > 8:  # unanswered pings: keep the newest few only
                del link.pings[min(link.pings)]
            self._out.append(Ping(ts=ts))
        self._probe_step(now, wall_ms)
        if self.processed_pos > self.acked_pos and (
            self._unacked >= self.config.ack_every
            or (
                self._unacked_since is not None
                and now - self._unacked_since >= self.config.ack_delay
            )
        ):
            self._out.append(Ack(pos=self.processed_pos))
            self.acked_pos = self.processed_pos
            self._unacked = 0
            self._unacked_since = None
        self._pump(now)
        return True

    def next_deadline(self, now: float) -> float:
        """The monotonic time at which ``poll`` next has something to do."""
        link = self._link
        if self.phase is Phase.HELLO_SENT:
            return link.opened_at + self.config.handshake_timeout
        if not self.logged_in:
            return now + 3600.0
        if link.dead:
            return now
        d = min(link.last_ping + self._heartbeat_s(), link.last_heard + self._timeout_s())
        if link.pings:
            sent = min(link.pings.values())
            if link.last_heard < sent:
                d = min(d, sent + self._pong_wait_s() + 1e-6)
        probe_due = self._probe_due()
        if probe_due is not None:
            d = min(d, probe_due)
        if self.processed_pos > self.acked_pos:
            if self._unacked >= self.config.ack_every:
                return now
            since = self._unacked_since if self._unacked_since is not None else now
            d = min(d, since + self.config.ack_delay)
        elif self._unacked_since is not None:
            self._unacked, self._unacked_since = 0, None
        if self._ready and self._link.inflight < self.config.window:
            if self._paused_until > now:
                d = min(d, self._paused_until)
            else:
                d = min(d, self._pacer.next_token(now))
        return d

    def _pump(self, now: float) -> None:
        """Move outbox entries onto the wire, in filing order, up to the window."""
        if not self.logged_in or now < self._paused_until:
            return
        ready = self._ready
        while ready and self._link.inflight < self.config.window:
            entry = self._outbox.get(ready[0][1])
            if entry is None or entry.inflight:
                heapq.heappop(ready)
                continue
            if not self._pacer.take(now):
                self._counters.paced += 1
                return  # next_deadline: when the next token is due
            heapq.heappop(ready)
            entry.inflight = True
            self._link.inflight += 1
            self._out.append(entry.frame)
