"""The client session state machine without sockets or clocks (docs/protocol.md §3-§6)."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaydesk.protocol.client_session import (
    TRANSITIONS,
    ClientSession,
    ConnectionState,
    Input,
    LocalProtocolError,
    Phase,
    ReconnectPolicy,
    ReplyReceived,
    RequestFailed,
    SendDone,
    SendFailed,
    SessionConfig,
    backoff_delay,
)
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    Ack,
    Error,
    Event,
    Frame,
    Hello,
    HistoryPage,
    HistoryQuery,
    Join,
    Joined,
    Messages,
    Ok,
    Ping,
    Pong,
    PresenceChange,
    PubAck,
    Publish,
    Read,
    ServerFrame,
    Synced,
    Welcome,
)

ME, DEV = "me", "d1"


def welcome(cursor: int = 0, heartbeat_ms: int = 1000, timeout_ms: int = 3000) -> Welcome:
    return Welcome(
        user=ME,
        device=DEV,
        session="s",
        node="n",
        region="r",
        heartbeat_ms=heartbeat_ms,
        timeout_ms=timeout_ms,
        server_ts=0,
        cursor=cursor,
        max_body=1024,
        max_frame=4096,
        exp=2_000_000_000,
    )


def msg(
    pos: int, seq: int, sender: str = "bob", dev: str = "x", conv: str = "dm:bob:me", mid: str = ""
) -> Event:
    return Event(
        conv=conv,
        pos=pos,
        seq=seq,
        kind="msg",
        sender=sender,
        dev=dev,
        id=mid or f"{sender}-{pos}",
        ts=pos,
        body=b"b%d" % pos,
    )


def live(cfg: SessionConfig | None = None, cursor: int | None = None) -> ClientSession:
    s = ClientSession(cfg or SessionConfig(user=ME, device=DEV), cursor=cursor)
    s.connection_opened("tok", 0.0)
    s.receive(welcome(cursor or 0), 0.0)
    s.receive(Synced(pos=cursor or 0), 0.0)
    s.take_outgoing()
    return s


def drain(s: ClientSession, now: float = 0.0) -> list[Event | PresenceChange]:
    out = []
    while (item := s.next_item(now)) is not None:
        out.append(item)
    return out


def pub(i: str, to: str = "user:bob") -> Publish:
    return Publish(id=i, to=to, body=b"x")


# --------------------------------------------------------------------------- table


def test_states_follow_the_table() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV))
    assert s.state is ConnectionState.CONNECTING
    s.connection_opened("tok", 0.0)
    hello = s.take_outgoing()
    assert hello == [Hello(token="tok", device=DEV, cursor=None, sdk=s.config.sdk)]
    assert s.state is ConnectionState.CONNECTING
    s.receive(welcome(), 0.0)
    assert s.state is ConnectionState.CONNECTED
    s.receive(Synced(pos=0), 0.0)
    assert s.state is ConnectionState.SYNCED
    s.connection_lost(1006, 1.0)
    assert s.state is ConnectionState.RECONNECTING
    s.connection_opened("tok", 1.0)
    assert s.state is ConnectionState.RECONNECTING
    s.close()
    assert s.state is ConnectionState.CLOSED


def test_illegal_transition_raises() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV))
    with pytest.raises(LocalProtocolError):
        s.receive(welcome(), 0.0)  # welcome before the link is open
    s2 = live()
    with pytest.raises(LocalProtocolError):
        s2.connection_opened("tok", 0.0)  # already up


def test_table_has_no_exit_from_terminal_phases_but_close() -> None:
    for (phase, inp), _ in TRANSITIONS.items():
        if phase in (Phase.CLOSED, Phase.FAILED):
            assert inp is Input.CLOSE


@pytest.mark.parametrize("code", [ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_WRONG_APP])
def test_bad_token_close_is_fatal(code: ErrorCode) -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV))
    s.connection_opened("tok", 0.0)
    assert s.send(pub("a"), 0.0) is None
    s.connection_lost(int(code), 0.0)
    assert s.state is ConnectionState.FAILED
    assert s.take_completions() == [SendFailed("a", int(code), "connection refused for good")]


def test_expired_token_is_fatal_only_without_provider() -> None:
    s = live()
    s.connection_lost(int(ErrorCode.TOKEN_EXPIRED), 0.0)
    assert s.state is ConnectionState.FAILED
    s = live(SessionConfig(user=ME, device=DEV, has_token_provider=True))
    s.connection_lost(int(ErrorCode.TOKEN_EXPIRED), 0.0)
    assert s.state is ConnectionState.RECONNECTING


def test_reconnect_attempts_exhausted_fail() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV, max_reconnect_attempts=2))
    for _ in range(2):
        s.connection_opened("tok", 0.0)
        s.connection_lost(1006, 0.0)
        assert s.state is ConnectionState.CONNECTING
    s.connection_opened("tok", 0.0)
    s.connection_lost(1006, 0.0)
    assert s.state is ConnectionState.FAILED


# --------------------------------------------------------------------------- backoff


@given(st.integers(0, 100), st.floats(0, 0.999999))
def test_backoff_is_full_jitter_within_bounds(attempt: int, r: float) -> None:
    p = ReconnectPolicy(base_s=0.1, max_s=5.0)
    d = backoff_delay(attempt, p, lambda: r)
    assert 0 <= d <= min(5.0, 0.1 * 2**attempt)


def test_backoff_grows_then_caps() -> None:
    p = ReconnectPolicy(base_s=0.1, max_s=1.0)
    ceilings = [backoff_delay(a, p, lambda: 1.0) for a in range(6)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_reconnect_policy_validates() -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(base_s=0)
    with pytest.raises(ValueError):
        ReconnectPolicy(base_s=2, max_s=1)


def test_attempts_reset_after_a_stable_connection() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV, stable_s=10.0), rand=lambda: 1.0)
    p = ReconnectPolicy(base_s=1.0, max_s=100.0)
    for _ in range(3):
        s.connection_opened("t", 0.0)
        s.connection_lost(None, 0.0)
    assert s.reconnect_delay(p) == 4.0
    # Synced, then lost at once (a flapping link): the back-off keeps growing.
    s.connection_opened("t", 0.0)
    s.receive(welcome(), 0.0)
    s.receive(Synced(pos=0), 0.0)
    s.connection_lost(1006, 5.0)
    assert s.reconnect_delay(p) == 8.0
    # Synced and up for stable_s: the next loss starts the back-off over.
    s.connection_opened("t", 20.0)
    s.receive(welcome(), 20.0)
    s.receive(Synced(pos=0), 20.0)
    s.connection_lost(1006, 30.0)
    assert s.reconnect_delay(p) == 1.0


# --------------------------------------------------------------------------- feed


def test_feed_dedups_by_pos_and_seq() -> None:
    s = live()
    s.receive(Messages(items=[msg(1, 1), msg(2, 2)]), 0.0)
    s.receive(Messages(items=[msg(2, 2), msg(3, 3)]), 0.0)  # redelivered 2
    s.receive(Messages(items=[msg(4, 3)]), 0.0)  # same seq under a new pos
    got = drain(s)
    assert [e.pos for e in got if isinstance(e, Event)] == [1, 2, 3]
    assert s.statistics().duplicates_skipped == 2
    assert s.processed_pos == 4


def test_own_echo_confirms_outbox_and_is_not_surfaced() -> None:
    s = live()
    assert s.send(pub("d1-a"), 0.0) is None
    assert s.take_outgoing() == [pub("d1-a")]
    s.receive(Messages(items=[msg(7, 1, sender=ME, dev=DEV, conv="dm:bob:me", mid="d1-a")]), 0.0)
    assert s.take_completions() == [SendDone("d1-a", "dm:bob:me", 1, 7, 7, False)]
    assert drain(s) == []
    assert s.processed_pos == 7
    # The puback that follows finds nothing to confirm.
    s.receive(PubAck(id="d1-a", conv="dm:bob:me", seq=1, pos=7, ts=7), 0.0)
    assert s.take_completions() == []
    assert s.statistics().inflight == 0


def test_own_messages_from_other_devices_are_surfaced() -> None:
    s = live()
    other = msg(3, 1, sender=ME, dev="d2", mid="d2-x")
    s.receive(Messages(items=[other]), 0.0)
    assert drain(s) == [other]


def test_processed_cursor_waits_for_the_application() -> None:
    s = live()
    s.receive(Messages(items=[msg(1, 1), msg(2, 1, sender=ME, dev=DEV, conv="dm:me:z")]), 0.0)
    assert s.processed_pos == 0  # pos 1 still waits in the buffer
    assert s.received_pos == 2
    [first] = drain(s)
    assert isinstance(first, Event) and first.pos == 1
    assert s.processed_pos == 2  # the echo behind it is covered too


def test_acks_are_coalesced_by_count_and_time() -> None:
    s = live(SessionConfig(user=ME, device=DEV, ack_every=3, ack_delay=0.1))
    s.receive(Messages(items=[msg(i, i) for i in range(1, 3)]), 0.0)
    drain(s, 0.0)
    assert s.poll(0.01, 0) and s.take_outgoing() == []
    assert s.next_deadline(0.01) == pytest.approx(0.1)
    assert s.poll(0.1, 0)
    assert s.take_outgoing() == [Ack(pos=2)]
    s.receive(Messages(items=[msg(i, i) for i in range(3, 7)]), 0.2)
    drain(s, 0.2)
    assert s.poll(0.2, 0)
    assert s.take_outgoing() == [Ack(pos=6)]
    assert s.poll(2.0, 0)
    assert not any(isinstance(f, Ack) for f in s.take_outgoing())


def test_resume_uses_received_cursor_and_repeats_ack() -> None:
    s = live(cursor=10)
    s.receive(Messages(items=[msg(11, 1), msg(12, 2)]), 0.0)
    drain(s)
    s.connection_lost(1006, 0.0)
    s.connection_opened("tok", 0.5)
    [hello] = s.take_outgoing()
    assert isinstance(hello, Hello) and hello.cursor == 12
    s.receive(welcome(cursor=12), 0.5)
    assert Ack(pos=12) in s.take_outgoing()


def test_fresh_device_takes_server_cursor() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV))
    s.connection_opened("tok", 0.0)
    s.receive(welcome(cursor=40), 0.0)
    assert s.received_pos == s.processed_pos == 40


def test_overflow_stops_accepting_and_requests_resync() -> None:
    s = live(SessionConfig(user=ME, device=DEV, buffer_limit=4))
    s.receive(Messages(items=[msg(i, i) for i in range(1, 9)]), 0.0)
    assert s.buffered == 4 and s.received_pos == 4 and s.overflowed
    assert not s.resync_wanted
    s.next_item(0.0)
    s.next_item(0.0)
    assert s.resync_wanted
    s.connection_lost(1000, 0.0)
    s.connection_opened("t", 0.0)
    [hello] = s.take_outgoing()
    assert isinstance(hello, Hello) and hello.cursor == 4
    s.receive(welcome(cursor=4), 0.0)
    got = drain(s)
    s.receive(Messages(items=[msg(i, i) for i in range(5, 9)]), 0.0)
    got += drain(s)
    assert [e.pos for e in got if isinstance(e, Event)] == [3, 4, 5, 6, 7, 8]


def test_presence_dropped_when_buffer_full() -> None:
    s = live(SessionConfig(user=ME, device=DEV, buffer_limit=1))
    p = PresenceChange(user="bob", online=True, devices=1, ts=1)
    s.receive(p, 0.0)
    s.receive(p, 0.0)
    assert s.statistics().presence_dropped == 1
    assert drain(s) == [p]


def test_send_only_session_skips_feed() -> None:
    s = live(SessionConfig(user=ME, device=DEV, surface=False))
    s.receive(Messages(items=[msg(1, 1)]), 0.0)
    assert drain(s) == [] and s.processed_pos == 1


# --------------------------------------------------------------------------- outbox


def test_outbox_window_and_order_after_reconnect() -> None:
    s = live(SessionConfig(user=ME, device=DEV, window=2))
    for i in "abcd":
        assert s.send(pub(i), 0.0) is None
    assert [f.id for f in s.take_outgoing() if isinstance(f, Publish)] == ["a", "b"]
    s.receive(PubAck(id="a", conv="dm:bob:me", seq=1, pos=1, ts=1), 0.0)
    assert [f.id for f in s.take_outgoing() if isinstance(f, Publish)] == ["c"]
    s.connection_lost(1006, 0.0)
    s.connection_opened("t", 1.0)
    s.take_outgoing()
    s.receive(welcome(), 1.0)
    assert [f.id for f in s.take_outgoing() if isinstance(f, Publish)] == ["b", "c"]
    assert [p.id for p in s.unconfirmed()] == ["b", "c", "d"]


def test_outbox_is_bounded() -> None:
    s = live(SessionConfig(user=ME, device=DEV, outbox_limit=2))
    assert s.send(pub("a"), 0) is None and s.send(pub("b"), 0) is None
    assert s.send(pub("c"), 0) is ErrorCode.OUTBOX_FULL
    assert s.send(pub("a"), 0) is ErrorCode.DUPLICATE_ID_MISMATCH


def test_rate_limited_publish_retries_in_order_after_pause() -> None:
    s = live(SessionConfig(user=ME, device=DEV, window=10))
    for i in "ab":
        s.send(pub(i), 0.0)
    s.take_outgoing()
    s.receive(Error(code=int(ErrorCode.RATE_LIMITED), msg="slow", id="a"), 0.0)
    s.receive(Error(code=int(ErrorCode.RATE_LIMITED), msg="slow", id="b"), 0.0)
    s.poll(0.01, 0)
    assert not any(isinstance(f, Publish) for f in s.take_outgoing())
    t = s.next_deadline(0.01)
    assert 0.01 < t < 1.0
    s.poll(t, 0)
    assert [f.id for f in s.take_outgoing() if isinstance(f, Publish)] == ["a", "b"]


def test_refused_publish_fails_and_leaves_outbox() -> None:
    s = live()
    s.send(pub("a"), 0.0)
    s.receive(Error(code=4020, msg="not a member", id="a"), 0.0)
    assert s.take_completions() == [SendFailed("a", 4020, "not a member")]
    assert s.outbox_size == 0


def test_nothing_is_published_before_welcome() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV))
    s.send(pub("a"), 0.0)
    s.connection_opened("t", 0.0)
    assert [type(f) for f in s.take_outgoing()] == [Hello]
    s.receive(welcome(), 0.0)
    assert s.take_outgoing() == [pub("a")]


# --------------------------------------------------------------------------- requests


def test_requests_match_replies_by_rid_and_resend_after_reconnect() -> None:
    s = live()
    j = Join(rid=s.next_rid(), channel="room")
    h = HistoryQuery(rid=s.next_rid(), conv="ch:room", limit=5)
    s.request(j)
    s.request(h)
    assert s.take_outgoing() == [j, h]
    joined = Joined(rid=j.rid, channel="room", conv="ch:room", role="member")
    s.receive(joined, 0.0)
    s.connection_lost(1006, 0.0)
    s.connection_opened("t", 0.0)
    s.take_outgoing()
    s.receive(welcome(), 0.0)
    assert h in s.take_outgoing()
    page = HistoryPage(rid=h.rid, conv="ch:room", items=[], more=False)
    s.receive(page, 0.0)
    s.receive(Error(code=4021, msg="nope", rid=99), 0.0)  # unknown rid: ignored
    assert s.take_completions() == [ReplyReceived(j.rid, joined), ReplyReceived(h.rid, page)]


def test_request_error_by_rid() -> None:
    s = live()
    s.request(Join(rid=5, channel="c"))
    s.receive(Error(code=4020, msg="no", rid=5), 0.0)
    assert s.take_completions() == [RequestFailed(5, 4020, "no")]
    s.receive(Ok(rid=5), 0.0)
    assert s.take_completions() == []


def test_mark_read_is_fire_and_forget() -> None:
    s = live()
    assert s.mark_read("dm:bob:me", 4)
    assert s.take_outgoing() == [Read(conv="dm:bob:me", seq=4)]


def test_close_fails_pending_calls() -> None:
    s = live()
    s.send(pub("a"), 0.0)
    s.request(Join(rid=1, channel="c"))
    s.close()
    assert {type(c) for c in s.take_completions()} == {SendFailed, RequestFailed}


# --------------------------------------------------------------------------- heartbeat


def test_heartbeat_pings_and_detects_a_dead_link() -> None:
    s = live()
    assert s.poll(0.5, 1_000) and s.take_outgoing() == []
    assert s.next_deadline(0.5) == pytest.approx(1.0)
    assert s.poll(1.0, 2_000)
    assert s.take_outgoing() == [Ping(ts=2_000)]
    s.receive(Pong(ts=2_000, server_ts=2_500), 1.2)
    assert s.rtt == pytest.approx(0.2)
    assert s.clock_skew_ms == pytest.approx(400.0)
    assert s.poll(4.1, 5_000)
    assert not s.poll(4.3, 5_300)  # 3.1 s of silence > timeout_ms=3000


def test_login_deadline() -> None:
    s = ClientSession(SessionConfig(user=ME, device=DEV, handshake_timeout=2.0))
    s.connection_opened("t", 0.0)
    assert s.poll(1.9, 0)
    assert not s.poll(2.1, 0)


# --------------------------------------------------------------------------- property


@dataclass
class FakeServer:
    """The server side of the contract, minimal: one user's feed, dedup, catch-up."""

    feed: list[Event] = field(default_factory=list)
    committed: dict[str, Event] = field(default_factory=dict)
    cursor: int = 0
    pos: int = 0
    seqs: dict[str, int] = field(default_factory=dict)
    attached: bool = False
    sent_upto: int = 0
    reject_next: bool = False
    to_client: deque[ServerFrame] = field(default_factory=deque)
    to_server: deque[Frame] = field(default_factory=deque)
    commits: int = 0

    def append(self, conv: str, sender: str, dev: str, mid: str) -> Event:
        self.pos += random.randint(1, 3)  # positions are not contiguous for a user
        self.seqs[conv] = self.seqs.get(conv, 0) + 1
        e = Event(
            conv=conv,
            pos=self.pos,
            seq=self.seqs[conv],
            kind="msg",
            sender=sender,
            dev=dev,
            id=mid,
            ts=self.pos,
            body=mid.encode(),
        )
        self.feed.append(e)
        if self.attached:
            self.to_client.append(Messages(items=[e]))
            self.sent_upto = e.pos
        return e

    def handle_one(self) -> None:
        frame = self.to_server.popleft()
        if isinstance(frame, Hello):
            cursor = frame.cursor if frame.cursor is not None else self.cursor
            self.to_client.append(welcome(cursor))
            after = [e for e in self.feed if e.pos > cursor]
            for i in range(0, len(after), 3):
                self.to_client.append(Messages(items=after[i : i + 3]))
            self.to_client.append(Synced(pos=self.pos))
            self.attached, self.sent_upto = True, self.pos
        elif isinstance(frame, Publish):
            if self.reject_next:
                self.reject_next = False
                self.to_client.append(Error(code=4040, msg="slow", id=frame.id))
                return
            e = self.committed.get(frame.id)
            dup = e is not None
            if e is None:
                self.commits += 1
                e = self.committed[frame.id] = self.append("dm:me:zed", ME, DEV, frame.id)
            self.to_client.append(
                PubAck(id=frame.id, conv=e.conv, seq=e.seq, pos=e.pos, ts=e.ts, dup=dup)
            )
        elif isinstance(frame, Ack):
            self.cursor = max(self.cursor, frame.pos)
        elif isinstance(frame, Ping):
            self.to_client.append(Pong(ts=frame.ts, server_ts=frame.ts))

    def redeliver(self, k: int) -> None:
        old = [e for e in self.feed if e.pos <= self.sent_upto][-k:]
        if self.attached and old:
            self.to_client.append(Messages(items=old))

    def drop(self) -> None:
        self.attached = False
        self.to_client.clear()
        self.to_server.clear()


OPS = st.lists(
    st.sampled_from(
        [
            "bob",
            "bob",
            "twin",
            "send",
            "send",
            "c2s",
            "c2s",
            "c2s",
            "s2c",
            "s2c",
            "s2c",
            "s2c",
            "consume",
            "drop",
            "redeliver",
            "ratelimit",
            "tick",
            "restart",
        ]
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_every_acknowledged_message_exactly_once_in_order(ops: list[str], seed: int) -> None:
    random.seed(seed)
    srv = FakeServer()
    cfg = SessionConfig(user=ME, device=DEV, window=3, buffer_limit=5, ack_every=2)
    s = ClientSession(cfg, rand=random.random)
    seen: list[Event] = []
    confirmed: dict[str, SendDone] = {}
    sent: list[str] = []
    now = 0.0
    n = 0

    def pump() -> None:
        srv.to_server.extend(s.take_outgoing())
        for c in s.take_completions():
            assert isinstance(c, SendDone), c
            assert c.id not in confirmed
            confirmed[c.id] = c

    def consume() -> None:
        while (item := s.next_item(now)) is not None:
            assert isinstance(item, Event)
            seen.append(item)

    def connect() -> None:
        if s.phase is Phase.DOWN:
            s.connection_opened("tok", now)

    connect()
    for op in ops:
        n += 1
        if op == "bob":
            srv.append("dm:bob:me", "bob", "b", f"bob-{n}")
        elif op == "twin":
            srv.append("dm:me:zed", ME, "d2", f"d2-{n}")  # my other device
        elif op == "send":
            mid = f"{DEV}-{n}"
            if s.send(Publish(id=mid, to="user:zed", body=mid.encode()), now) is None:
                sent.append(mid)
        elif op == "c2s" and srv.to_server:
            srv.handle_one()
        elif op == "s2c" and srv.to_client:
            s.receive(srv.to_client.popleft(), now)
        elif op == "consume":
            consume()
        elif op == "drop":
            srv.drop()
            s.connection_lost(1006, now)
            connect()
        elif op == "redeliver":
            srv.redeliver(random.randint(1, 4))
        elif op == "ratelimit":
            srv.reject_next = True
        elif op == "tick":
            now += random.choice([0.05, 0.5, 2.0])
            if not s.poll(now, int(now * 1000)):
                srv.drop()
                s.connection_lost(None, now)
                connect()
        elif op == "restart":  # the application process restarts with its stored cursor
            consume()
            pump()
            srv.drop()
            unconfirmed = s.unconfirmed()
            s = ClientSession(cfg, cursor=s.processed_pos, rand=random.random)
            for p in unconfirmed:  # a persistent outbox refiles its entries
                s.send(p, now)
            connect()
        if s.resync_wanted:
            srv.drop()
            s.connection_lost(1000, now)
            connect()
        pump()
        # The outbox never loses an unacknowledged message.
        assert {p.id for p in s.unconfirmed()} | set(confirmed) == set(sent)

    # Quiesce: a healthy link until nothing moves.
    srv.reject_next = False
    for _ in range(10_000):
        consume()
        if s.resync_wanted:
            srv.drop()
            s.connection_lost(1000, now)
            connect()
        pump()
        if srv.to_server:
            srv.handle_one()
        elif srv.to_client:
            s.receive(srv.to_client.popleft(), now)
        elif s.outbox_size or s.buffered:
            now += 0.5
            assert s.poll(now, int(now * 1000)) or True
        else:
            break
        pump()
    consume()

    assert set(confirmed) == set(sent)
    assert srv.commits == len(sent)  # the server committed each id exactly once
    for mid, done in confirmed.items():
        assert (done.conv, done.seq, done.pos) == (
            srv.committed[mid].conv,
            srv.committed[mid].seq,
            srv.committed[mid].pos,
        )
    expected = [e for e in srv.feed if not (e.sender == ME and e.dev == DEV)]
    assert [e.pos for e in seen] == [e.pos for e in expected]


# --------------------------------------------------------------------------- pacing


class RateLimitedServer:
    """The server's per-connection publish rule (docs/protocol.md §8.1): a token bucket
    of ``rate``/s holding ``burst``; a publish finding it empty gets 4040.  Commits in
    arrival order; replies after ``rtt``."""

    def __init__(self, rate: float, burst: float, rtt: float) -> None:
        self.rate, self.burst, self.rtt = rate, burst, rtt
        self.tokens, self.stamp = burst, 0.0
        self.committed: dict[str, list[str]] = {}  # conv -> ids in commit order
        self.refused = 0
        self.replies: list[tuple[float, ServerFrame]] = []
        self.seq = 0

    def arrive(self, frame: Publish, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            self.refused += 1
            reply: ServerFrame = Error(code=int(ErrorCode.RATE_LIMITED), msg="slow", id=frame.id)
        else:
            self.tokens -= 1
            self.seq += 1
            self.committed.setdefault(frame.to, []).append(frame.id)
            reply = PubAck(id=frame.id, conv=frame.to, seq=self.seq, pos=self.seq, ts=0)
        self.replies.append((now + self.rtt, reply))


def run_outbox(
    s: ClientSession, server: RateLimitedServer, start: float, limit_s: float = 60.0
) -> float:
    """Drive ``s`` against ``server`` on a fake clock until the outbox is empty."""
    now = start
    while s.outbox_size and now < start + limit_s:
        s.poll(now, int(now * 1000))
        for frame in s.take_outgoing():
            if isinstance(frame, Publish):
                server.arrive(frame, now + server.rtt / 2)
        due = [r for r in server.replies if r[0] <= now]
        server.replies = [r for r in server.replies if r[0] > now]
        for _, reply in due:
            s.receive(reply, now)
        nxt = min([s.next_deadline(now), *(t for t, _ in server.replies)])
        now = max(now + 1e-4, min(nxt, now + 0.05))
    return now


def outbox_after_reconnect(n: int, rate: int | None, convs: int = 3) -> ClientSession:
    """A session that filed ``n`` messages to ``convs`` channels while disconnected,
    then logs in again (``rate``: what ``welcome`` advertises)."""
    s = live()
    s.connection_lost(1006, 0.0)
    for i in range(n):
        assert s.send(pub(f"m{i}", to=f"channel:c{i % convs}"), 0.0) is None
    s.connection_opened("t", 1.0)
    s.take_outgoing()
    w = welcome()
    s.receive(
        Welcome(**{**{f: getattr(w, f) for f in w.__struct_fields__}, "publish_rate": rate}), 1.0
    )
    return s


def test_reconnect_with_a_full_outbox_paces_to_the_advertised_rate() -> None:
    s = outbox_after_reconnect(2000, rate=500)
    server = RateLimitedServer(rate=500, burst=1000, rtt=0.02)
    end = run_outbox(s, server, 1.0)
    # Before pacing, the window refilled at every puback: ~1,000 went through on the
    # burst, then hundreds of 4040s (and retries that could overtake each other).
    assert server.refused == 0 and s.statistics().rate_limited == 0
    assert s.statistics().paced > 0
    for c in range(3):
        assert server.committed[f"channel:c{c}"] == [f"m{i}" for i in range(c, 2000, 3)]
    # At just under 500/s after half a second's burst: about four seconds, not less.
    assert 3.5 < end - 1.0 < 5.0


def test_pace_follows_a_lower_advertised_rate_and_the_default_without_one() -> None:
    slow = outbox_after_reconnect(300, rate=100)
    server = RateLimitedServer(rate=100, burst=200, rtt=0.01)
    end = run_outbox(slow, server, 1.0)
    assert server.refused == 0 and 2.5 < end - 1.0 < 3.5
    # An older server advertises nothing: the documented 500/s.
    plain = outbox_after_reconnect(1000, rate=None)
    server = RateLimitedServer(rate=500, burst=1000, rtt=0.01)
    end = run_outbox(plain, server, 1.0)
    assert server.refused == 0 and 1.5 < end - 1.0 < 2.5
    # The application may set it lower than the default.
    cfg = SessionConfig(user=ME, device=DEV, publish_rate=50)
    s = ClientSession(cfg)
    s.connection_opened("t", 0.0)
    s.receive(welcome(), 0.0)
    for i in range(100):
        s.send(pub(f"x{i}"), 0.0)
    first = [f for f in s.take_outgoing() if isinstance(f, Publish)]
    assert len(first) == 23  # half a second at 95 % of 50/s
    assert s.next_deadline(0.0) == pytest.approx(1 / 47.5 - (23.75 - 23) / 47.5, abs=1e-3)


def test_rate_limited_message_goes_first_and_the_pace_restarts_from_empty() -> None:
    # A server stricter than it says (burst 20): 4040s for one burst, then back-off,
    # then the refused message is resent before every later one and nothing bursts.
    # (Messages already in flight when a 4040 comes back may commit before its retry;
    # docs/protocol.md §5.2 says so, and pacing is what keeps 4040s away.)
    s = outbox_after_reconnect(400, rate=500, convs=1)
    server = RateLimitedServer(rate=500, burst=20, rtt=0.02)
    run_outbox(s, server, 1.0)
    # The first half-second's worth met the smaller bucket (217 refused); each round of
    # refusals halves the session's burst, so a few small rounds follow, then none;
    # everything was committed once.
    assert 0 < server.refused == s.statistics().rate_limited <= 217 + 40
    assert sorted(server.committed["channel:c0"]) == sorted(f"m{i}" for i in range(400))
    s2 = live()
    for i in "abc":
        s2.send(pub(i), 0.0)
    s2.take_outgoing()
    s2.receive(Error(code=int(ErrorCode.RATE_LIMITED), msg="slow", id="a"), 0.0)
    t = s2.next_deadline(0.0)
    s2.poll(t, 0)
    # a retried first; b and c are still in flight and not sent again.
    assert [f.id for f in s2.take_outgoing() if isinstance(f, Publish)] == ["a"]
    assert s2.statistics().paced == 0


def test_a_drain_reconnects_at_once_only_when_there_is_another_node() -> None:
    """Moved off a draining node (4061): at once if another node is there to try;
    a lone draining node is backed off from like a failure, growing, so its clients
    do not reconnect to it in a loop (docs/protocol.md §3.6)."""
    s = ClientSession(SessionConfig(user=ME, device=DEV), rand=lambda: 1.0)
    p = ReconnectPolicy(base_s=1.0, max_s=100.0)
    s.connection_opened("t", 0.0)
    s.connection_lost(int(ErrorCode.SERVER_DRAINING), 0.0, elsewhere=True)
    assert s.reconnect_delay(p) == 0.0
    delays = []
    for _ in range(3):
        s.connection_opened("t", 0.0)
        s.connection_lost(int(ErrorCode.SERVER_DRAINING), 0.0, elsewhere=False)
        delays.append(s.reconnect_delay(p))
    assert delays == [1.0, 2.0, 4.0]
