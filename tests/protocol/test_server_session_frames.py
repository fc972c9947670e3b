"""The meaning of every client frame, in the pure server session: bytes in, actions out.

No sockets, no hub, no clock: the test plays the shell, feeding encoded frames and
completing the I/O actions by hand (docs/protocol.md §3, §5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from relaydesk.protocol.addresses import resolve
from relaydesk.protocol.codec import client_codec, server_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Ack,
    AuthOk,
    Delete,
    Error,
    Event,
    Hello,
    HistoryPage,
    HistoryQuery,
    Invite,
    Join,
    Joined,
    Leave,
    Ok,
    Ping,
    Pong,
    PresenceQuery,
    PresenceState,
    Probe,
    PubAck,
    Publish,
    Read,
    Refresh,
    UserPresence,
)
from relaydesk.protocol.server_session import (
    Answer,
    Attach,
    Close,
    Commit,
    DeleteIntent,
    JoinIntent,
    LeaveIntent,
    NoteAck,
    PublishIntent,
    QueryHistory,
    QueryPresence,
    ReadIntent,
    ServerSession,
    SessionLimits,
)
from relaydesk.protocol.tokens import mint_token

APP, SECRET = "app", "s" * 32
WALL_MS = 1_700_000_000_000
LIMITS = SessionLimits(
    auth_timeout_s=10,
    heartbeat_timeout_s=30,
    publish_rate=10,
    publish_burst=5,
    flood_rejections=4,
    max_body=100,
    max_frame=2048,
    max_inflight=3,
    node="n1",
    region="eu",
)


@dataclass
class Seen:
    """A recording observer: what telemetry would have been told."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    def login_refused(self, hello: Hello, code: ErrorCode) -> None:
        self.calls.append(("login_refused", code))

    def published(self, recv: float, pos: int, conv: str, fresh: bool) -> None:
        self.calls.append(("published", (recv, pos, conv, fresh)))

    def publish_failed(self) -> None:
        self.calls.append(("publish_failed", None))

    def acked(self, pos: int) -> None:
        self.calls.append(("acked", pos))

    def probe(self, report: Probe) -> None:
        self.calls.append(("probe", report.samples))


def token(user: str = "alice", **kw: Any) -> str:
    return mint_token(APP, SECRET, user, now=WALL_MS / 1000, **kw)


def session(sub: str = SUBPROTOCOL_MSGPACK, observer: Any = None) -> ServerSession:
    s = ServerSession(LIMITS, 0.0, server_codec(sub), {APP: SECRET}.get)
    if observer is not None:
        s.observer = observer
    return s


def feed(s: ServerSession, frame: Any, now: float = 1.0, sent: int = 0) -> Any:
    assert s.codec is not None
    data: bytes | str = client_codec(s.codec.name).encode(frame)
    if not s.codec.binary:
        data = data.decode()
    return s.receive(data, now, WALL_MS, sent)


def logged_in(user: str = "alice", **kw: Any) -> ServerSession:
    s = session(**kw)
    action = feed(s, Hello(token=token(user), device="d1"))
    assert isinstance(action, Attach)
    s.welcome(action.claims, action.hello, 0, "sid", WALL_MS)
    return s


def test_hello_asks_the_shell_to_attach_then_welcome_carries_the_limits() -> None:
    s = session()
    action = feed(s, Hello(token=token(), device="d1", cursor=7))
    assert isinstance(action, Attach)
    assert (action.claims.sub, action.hello.device, action.hello.cursor) == ("alice", "d1", 7)
    welcome = s.welcome(action.claims, action.hello, 7, "sid", WALL_MS)
    assert (welcome.user, welcome.device, welcome.cursor) == ("alice", "d1", 7)
    assert (welcome.node, welcome.region, welcome.max_body, welcome.max_frame) == (
        "n1",
        "eu",
        100,
        2048,
    )
    assert welcome.timeout_ms == 30_000 and s.user == "alice" and s.app == APP


def test_a_token_pinned_to_another_device_closes_with_token_invalid() -> None:
    s = session()
    action = feed(s, Hello(token=token(device="phone"), device="laptop"))
    assert isinstance(action, Close) and action.code is ErrorCode.TOKEN_INVALID


def test_an_expired_token_is_refused_and_telemetry_hears_of_it() -> None:
    seen = Seen()
    s = session(observer=seen)
    old = mint_token(APP, SECRET, "alice", now=WALL_MS / 1000 - 7200, ttl_s=60)
    action = feed(s, Hello(token=old, device="d1"))
    assert isinstance(action, Close) and action.code is ErrorCode.TOKEN_EXPIRED
    assert action.final.code == ErrorCode.TOKEN_EXPIRED
    assert seen.calls == [("login_refused", ErrorCode.TOKEN_EXPIRED)]


def test_publish_is_a_commit_answered_by_a_puback_and_observed() -> None:
    seen = Seen()
    s = logged_in(observer=seen)
    action = feed(s, Publish(id="m1", to="user:bob", body=b"hi"), now=2.5)
    assert isinstance(action, Commit) and isinstance(action.intent, PublishIntent)
    assert action.intent.conv.id == "dm:alice:bob" and action.intent.ts == WALL_MS
    assert s.inflight == 1
    ev = Event(conv="dm:alice:bob", pos=9, seq=1, kind="msg", sender="alice", ts=5)
    reply = s.committed(action, None, ev, False)
    assert reply == PubAck(id="m1", conv="dm:alice:bob", seq=1, pos=9, ts=5)
    assert s.inflight == 0
    assert seen.calls == [("published", (2.5, 9, "dm:alice:bob", True))]


def test_a_refused_publish_answers_error_with_its_id() -> None:
    seen = Seen()
    s = logged_in(observer=seen)
    action = feed(s, Publish(id="m1", to="channel:x", body=b"hi"))
    assert isinstance(action, Commit)
    reply = s.committed(action, ProtocolError(ErrorCode.FORBIDDEN, "not a member"))
    assert reply == Error(code=4020, msg="not a member", id="m1")
    assert seen.calls == [("publish_failed", None)]


def test_too_many_publishes_in_flight_is_rate_limited() -> None:
    s = logged_in()
    for i in range(3):
        assert isinstance(feed(s, Publish(id=f"m{i}", to="user:bob", body=b"")), Commit)
    action = feed(s, Publish(id="m3", to="user:bob", body=b""))
    assert action == (Error(code=4040, msg="too many unacknowledged publishes", rid=None, id="m3"))


def test_bad_address_is_invalid_argument_and_keeps_the_connection() -> None:
    s = logged_in()
    action = feed(s, Publish(id="m1", to="nowhere", body=b""))
    assert isinstance(action, Error)
    assert action.code == ErrorCode.INVALID_ARGUMENT and action.id == "m1"


def test_ack_up_to_what_was_sent_only() -> None:
    seen = Seen()
    s = logged_in(observer=seen)
    assert feed(s, Ack(pos=5), sent=5) == NoteAck(5)
    action = feed(s, Ack(pos=6), sent=5)
    assert isinstance(action, Error)
    assert action.code == ErrorCode.INVALID_ARGUMENT
    assert seen.calls == [("acked", 5)]


def test_ping_is_answered_with_the_server_clock() -> None:
    s = logged_in()
    assert feed(s, Ping(ts=3)) == Pong(ts=3, server_ts=WALL_MS)


def test_probe_goes_to_telemetry_only() -> None:
    seen = Seen()
    s = logged_in(observer=seen)
    assert feed(s, Probe(rtt_p50_ms=1, rtt_p95_ms=2, loss=0, samples=4)) is None
    assert seen.calls == [("probe", 4)]


def test_read_delete_leave_invite_join_become_commits_with_their_answers() -> None:
    s = logged_in()
    read = feed(s, Read(conv="user:bob", seq=3))
    assert isinstance(read, Commit) and isinstance(read.intent, ReadIntent)
    assert read.answer is Answer.NONE and s.committed(read, None) is None
    dele = feed(s, Delete(rid=1, conv="dm:alice:bob", seq=3))
    assert isinstance(dele, Commit) and isinstance(dele.intent, DeleteIntent)
    assert s.committed(dele, None) == Ok(rid=1)
    leave = feed(s, Leave(rid=2, channel="room"))
    assert isinstance(leave, Commit) and isinstance(leave.intent, LeaveIntent)
    inv = feed(s, Invite(rid=3, channel="room", user="bob", role="owner"))
    assert isinstance(inv, Commit) and isinstance(inv.intent, JoinIntent)
    assert (inv.intent.user, inv.intent.role, inv.intent.via) == ("bob", "owner", "invite")
    err = s.committed(inv, ProtocolError(ErrorCode.FORBIDDEN, "owners only"))
    assert err == Error(code=4020, msg="owners only", rid=3)
    join = feed(s, Join(rid=4, channel="room"))
    assert isinstance(join, Commit) and isinstance(join.intent, JoinIntent)
    assert (join.intent.user, join.intent.role, join.intent.via) == ("alice", "member", "public")
    reply = s.committed(join, None, role="member")
    assert reply == Joined(rid=4, channel="room", conv="ch:room", role="member")


def test_join_with_a_grant_uses_the_granted_role() -> None:
    s = session()
    hello = feed(s, Hello(token=token(channels={"room": "owner"}), device="d1"))
    s.welcome(hello.claims, hello.hello, 0, "sid", WALL_MS)
    join = feed(s, Join(rid=1, channel="room"))
    assert isinstance(join, Commit) and isinstance(join.intent, JoinIntent)
    assert (join.intent.role, join.intent.via) == ("owner", "grant")


def test_history_and_presence_are_queries_answered_by_the_session() -> None:
    s = logged_in()
    q = feed(s, HistoryQuery(rid=7, conv="user:bob", before=10, limit=2))
    assert isinstance(q, QueryHistory) and q.conv.id == "dm:alice:bob"
    assert (q.before, q.after, q.limit) == (10, None, 2)
    assert s.history_page(q, [], False) == (
        HistoryPage(rid=7, conv="dm:alice:bob", items=[], more=False)
    )
    p = feed(s, PresenceQuery(rid=8, users=["bob"]))
    assert isinstance(p, QueryPresence) and p.users == ["bob"]
    users = [UserPresence(user="bob", online=True, devices=1)]
    assert s.presence_state(p, users) == PresenceState(rid=8, users=users)


def test_refresh_replaces_the_expiry_and_a_foreign_user_closes() -> None:
    s = logged_in()
    later = mint_token(APP, SECRET, "alice", now=WALL_MS / 1000 + 2, ttl_s=7200)
    action = feed(s, Refresh(rid=5, token=later))
    assert isinstance(action, AuthOk)
    assert s.exp == action.exp == int(WALL_MS / 1000) + 2 + 7200
    action = feed(s, Refresh(rid=6, token=token("mallory")))
    assert isinstance(action, Close) and action.code is ErrorCode.TOKEN_INVALID
    assert action.final.rid == 6


@pytest.mark.parametrize("sub", [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
def test_undecodable_bytes_close_with_bad_frame(sub: str) -> None:
    s = logged_in(sub=sub)
    action = s.receive("{nope" if sub == SUBPROTOCOL_JSON else b"\xc1", 1.0, WALL_MS, 0)
    assert isinstance(action, Close) and action.code is ErrorCode.BAD_FRAME


def test_unknown_frame_type_is_an_error_only() -> None:
    s = logged_in(sub=SUBPROTOCOL_JSON)
    action = s.receive('{"t":"teleport"}', 1.0, WALL_MS, 0)
    assert isinstance(action, Error)
    assert action.code == ErrorCode.UNKNOWN_FRAME


# -- confined tokens (docs/protocol.md §2.2): the desk console's live tokens ----------


def confined(peers: tuple[str, ...] = ("carol",)) -> ServerSession:
    s = session()
    tok = mint_token(
        APP, SECRET, "dana", now=WALL_MS / 1000, channels={"desk-t-3": "member"}, peers=peers
    )
    hello = feed(s, Hello(token=tok, device="web-1"))
    assert isinstance(hello, Attach) and hello.claims.confined
    s.welcome(hello.claims, hello.hello, 0, "sid", WALL_MS)
    return s


def forbidden(action: Any) -> bool:
    return isinstance(action, Error) and action.code == ErrorCode.FORBIDDEN


def test_a_confined_token_addresses_only_its_granted_channels() -> None:
    s = confined()
    assert isinstance(feed(s, Publish(id="m1", to="channel:desk-t-3", body=b"hi")), Commit)
    assert isinstance(feed(s, HistoryQuery(rid=1, conv="ch:desk-t-3")), QueryHistory)
    join = feed(s, Join(rid=2, channel="desk-t-3"))
    assert isinstance(join, Commit) and isinstance(join.intent, JoinIntent)
    assert join.intent.via == "grant"
    assert forbidden(feed(s, Publish(id="m2", to="channel:desk-queue", body=b"x")))
    assert forbidden(feed(s, Join(rid=3, channel="desk-war-9")))  # public or not
    assert forbidden(feed(s, HistoryQuery(rid=4, conv="ch:desk-t-4")))
    assert forbidden(feed(s, Invite(rid=5, channel="desk-t-3", user="mallory")))


def test_a_confined_token_messages_and_observes_only_its_peers() -> None:
    s = confined(peers=("carol",))
    assert isinstance(feed(s, Publish(id="m1", to="user:carol", body=b"hi")), Commit)
    assert isinstance(feed(s, Publish(id="m0", to="user:dana", body=b"note")), Commit)
    assert forbidden(feed(s, Publish(id="m2", to="user:agent.alice", body=b"x")))
    assert forbidden(feed(s, Publish(id="m3", to="dm:agent.alice:dana", body=b"x")))
    assert forbidden(feed(s, Read(conv="user:customer.other", seq=1)))
    assert forbidden(feed(s, HistoryQuery(rid=1, conv="dm:agent.alice:dana")))
    assert isinstance(feed(s, PresenceQuery(rid=2, users=["carol", "dana"])), QueryPresence)
    assert forbidden(feed(s, PresenceQuery(rid=3, users=["carol", "agent.alice"])))


def test_an_unconfined_token_is_unchanged() -> None:
    s = logged_in()
    assert isinstance(feed(s, Publish(id="m1", to="user:anyone", body=b"")), Commit)
    assert isinstance(feed(s, PresenceQuery(rid=1, users=["anyone"])), QueryPresence)
    with pytest.raises(ValueError):
        mint_token(APP, SECRET, "dana", now=0, channels={"*": "member"}, peers=())


def _msg(seq: int, size: int) -> Event:
    return Event(conv="dm:alice:bob", pos=seq, seq=seq, kind="msg", sender="bob", body=b"x" * size)


@pytest.mark.parametrize(("before", "after"), [(None, None), (100, None), (None, 0)])
def test_history_pages_are_cut_to_the_reply_budget(before: int | None, after: int | None) -> None:
    """A full page of large messages would be one reply far over the output budget; it is
    cut to max_reply_bytes, keeping the end nearest the cursor, and says ``more``."""
    s = ServerSession(
        dataclasses.replace(LIMITS, max_reply_bytes=10_000), 0.0, server_codec(SUBPROTOCOL_JSON)
    )
    items = [_msg(i, 3000) for i in range(1, 11)]  # ~4 KB each encoded
    q = QueryHistory(
        rid=1, conv=resolve("dm:alice:bob", "alice"), before=before, after=after, limit=10
    )
    reply = s.history_page(q, items, False)
    page = reply
    assert isinstance(page, HistoryPage)
    kept = [e.seq for e in page.items]
    assert page.more and 0 < len(kept) < 10
    assert kept == ([1, 2] if after is not None else [9, 10])
    assert len(client_codec(SUBPROTOCOL_JSON).encode(page)) <= 10_000
    small = [_msg(i, 10) for i in range(1, 11)]
    assert s.history_page(q, small, False) == HistoryPage(
        rid=1, conv="dm:alice:bob", items=small, more=False
    )
