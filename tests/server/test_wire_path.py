"""The native WebSocket path of ``/v1/ws`` (server/gateway/wire.py, docs/protocol.md §1.1).

Two parts: the write scheduling, tested on a real ``Connection`` and ``Flusher`` over a
recording sink (the transport boundary, as websockets tests its protocol without a
socket), and the path itself against a real server: subprotocol negotiation,
ping/pong, the close handshake, other upgrades left to uvicorn, and the ASGI engine
still selectable for comparison.  Frame limits, close codes and the output budget on
this path are the tests of test_gateway_limits.py, test_gateway_errors.py and
test_output_budget.py, which run on it by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from raw_client import Raw
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relaydesk.protocol.codec import client_codec, server_codec
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Event,
    Messages,
    Publish,
)
from relaydesk.protocol.server_session import ServerSession, SessionLimits
from relaydesk.server.gateway.connection import Connection
from relaydesk.server.gateway.handover import Mode
from relaydesk.server.gateway.wire import Flusher
from relaydesk.server.routing.fanout import Run
from relaydesk.server.routing.hub import Hub

# -- write scheduling (no socket) -------------------------------------------------------


class RecordingSink:
    """The transport boundary: records what the connection writes, in order."""

    def __init__(self, flusher: Flusher) -> None:
        self.flusher = flusher
        self.writes: list[bytes] = []
        self.closes: list[int] = []
        self.writable = True

    def write(self, data: bytes, binary: bool) -> None:
        self.writes.append(data)

    def write_batch(self, codec: Any, items: list[bytes]) -> None:
        self.writes.append(codec.encode_batch(items))

    def write_close(self, code: int, reason: str) -> None:
        self.closes.append(code)

    def schedule(self, conn: Connection) -> None:
        self.flusher.schedule(conn)

    def start_catchup(self, conn: Connection) -> None:
        raise AssertionError("a live connection does not catch up")

    def replies_drained(self, conn: Connection) -> None:
        pass


def _live_connection(sink: RecordingSink) -> Connection:
    codec = server_codec(SUBPROTOCOL_MSGPACK)
    limits = SessionLimits(
        auth_timeout_s=10, heartbeat_timeout_s=30, publish_rate=10, publish_burst=10,
        flood_rejections=10, max_body=1000,
    )  # fmt: skip
    conn = Connection(
        cast(Hub, None),  # the hub is only read in catch-up; this connection is live
        cast(Any, None),
        codec,
        ServerSession(limits, 0.0, codec),
        queue_items=100,
        queue_bytes=1 << 20,
        page=10,
        client_addr="test",
        sink=sink,
    )
    feed = conn.feed
    feed.start(0, 0)
    feed.page_read(feed.next_read(0), None, False, 0)
    assert feed.mode is Mode.LIVE
    conn.active = True
    return conn


def _event(pos: int) -> Event:
    return Event(conv="dm:a:b", pos=pos, seq=pos, kind="msg", sender="a", body=b"x")


def _run(*positions: int) -> Run:
    return Run([_event(p) for p in positions])


def _items(data: bytes) -> list[int]:
    frame = client_codec(SUBPROTOCOL_MSGPACK).decode(data)
    assert isinstance(frame, Messages)
    return [e.pos for e in frame.items]


async def test_a_lone_message_is_written_in_the_next_loop_turn_not_after_a_timer() -> None:
    flusher = Flusher()
    sink = RecordingSink(flusher)
    conn = _live_connection(sink)
    conn.offer_run(_run(1))
    assert sink.writes == []  # never written from inside the hub's fan-out
    await asyncio.sleep(0)  # one loop turn: the flusher's call_soon ran before us
    assert [_items(w) for w in sink.writes] == [[1]]


async def test_offers_of_one_loop_turn_coalesce_into_one_frame_per_connection() -> None:
    flusher = Flusher()
    a, b = RecordingSink(flusher), RecordingSink(flusher)
    conn_a, conn_b = _live_connection(a), _live_connection(b)
    first = _run(1, 2)  # one commit's run, then a commit of one event
    for run in (first, _run(3)):
        conn_a.offer_run(run)
        conn_b.offer_run(run)
    await asyncio.sleep(0)
    assert [_items(w) for w in a.writes] == [[1, 2, 3]]
    assert [_items(w) for w in b.writes] == [[1, 2, 3]]
    assert flusher.passes == 1
    assert all(len(e) == 1 for e in first.encodings)  # each event encoded once


async def test_a_run_partly_queued_already_adds_only_its_new_events() -> None:
    flusher = Flusher()
    sink = RecordingSink(flusher)
    conn = _live_connection(sink)
    conn.offer_run(_run(1, 2))
    conn.offer_run(_run(2, 3, 4))  # offered again after a resync, say
    await asyncio.sleep(0)
    assert [_items(w) for w in sink.writes] == [[1, 2, 3, 4]]


async def test_nothing_is_written_while_the_transport_pushes_back() -> None:
    flusher = Flusher()
    sink = RecordingSink(flusher)
    conn = _live_connection(sink)
    sink.writable = False
    conn.offer_run(_run(1))
    await asyncio.sleep(0)
    assert sink.writes == []
    assert conn.feed.queued_bytes > 0  # kept, and counted against the output budget
    sink.writable = True
    flusher.schedule(conn)  # what the transport's resume_writing does
    await asyncio.sleep(0)
    assert [_items(w) for w in sink.writes] == [[1]]


class FakeTelemetry:
    """A connection's telemetry: nothing to do when an event is offered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.first_gen = 0  # already set: offer_run does no recorder work
        self.closed = False


class FakeRecorder:
    """Records when it hears of a pass's writes, into the sinks' shared log."""

    def __init__(self, log: list[tuple[str, object]], mono: Callable[[], float]) -> None:
        self.log = log
        self.mono = mono

    def written_pass(self, written: list[Any], now: float) -> None:
        self.log.append(("tel", [(t.name, t.wrote_pos, t.wrote_n) for t in written], now))


async def test_a_pass_tells_telemetry_after_every_write_with_one_stamp_taken_first() -> None:
    """Issue 20: recording costs the readers nothing; the stamp precedes every write."""
    log: list[tuple[str, object]] = []
    ticks = iter(range(100, 200))

    def mono() -> float:
        t = float(next(ticks))
        log.append(("clock", t))
        return t

    flusher = Flusher(cast(Any, FakeRecorder(log, mono)))
    conns = []
    for name in ("a", "b", "c"):
        sink = RecordingSink(flusher)
        sink.write_batch = lambda codec, items, name=name: log.append(("write", name))  # type: ignore[method-assign]
        conn = _live_connection(sink)
        conn.tel = cast(Any, FakeTelemetry(name))
        conns.append(conn)
    run = _run(1, 2)
    for conn in conns:
        conn.offer_run(run)
    await asyncio.sleep(0)
    assert log == [
        ("clock", 100.0),
        ("write", "a"),
        ("write", "b"),
        ("write", "c"),
        ("tel", [("a", 2, 2), ("b", 2, 2), ("c", 2, 2)], 100.0),
    ]
    assert flusher.written == []


# -- the path against a real server -------------------------------------------------------


@pytest.fixture(scope="module")
def node(make_module_server: Callable[..., Any]) -> Any:
    return make_module_server(name="wire")


async def test_the_first_subprotocol_the_client_offers_and_the_server_speaks_wins(
    node: Any,
) -> None:
    offer = ["chat.v9", SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]
    async with connect(node.ws_url, subprotocols=offer) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == SUBPROTOCOL_JSON
    async with connect(node.ws_url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == SUBPROTOCOL_MSGPACK


async def test_an_upgrade_offering_no_relaydesk_subprotocol_is_refused_with_403(
    node: Any,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(node.ws_url, subprotocols=["chat.v9"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as bare:
        await connect(node.ws_url)
    assert bare.value.response.status_code == 403


async def test_ping_is_answered_with_pong_and_a_client_close_is_echoed(node: Any) -> None:
    async with connect(node.ws_url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
        latency = await asyncio.wait_for(await ws.ping(b"probe"), 5)
        assert latency >= 0
        await ws.close(4000 + 999, "bye")
        echoed = ws.protocol.close_rcvd
        assert echoed is not None and echoed.code == 4999


async def test_publish_and_delivery_round_trip_on_the_native_path(node: Any) -> None:
    bob = await Raw.login(node.ws_url, node.token("bob"), device="w1")
    alice = await Raw.login(node.ws_url, node.token("alice"), subprotocol=SUBPROTOCOL_JSON)
    await alice.send(Publish(id="w1", to="user:bob", body=b"hi"))
    assert (await alice.expect("puback")).id == "w1"
    events = await bob.events_until(1)
    assert events[-1].body == b"hi" and events[-1].sender == "alice"
    await alice.aclose()
    await bob.aclose()


async def test_the_asgi_engine_is_still_selectable(make_server: Callable[..., Any]) -> None:
    server = make_server({"gateway": {"ws_engine": "asgi"}})
    bob = await Raw.login(server.ws_url, server.token("bob"))
    alice = await Raw.login(server.ws_url, server.token("alice"))
    await alice.send(Publish(id="a1", to="user:bob", body=b"old path"))
    assert (await bob.events_until(1))[-1].body == b"old path"
    await alice.aclose()
    await bob.aclose()


async def test_deflate_is_not_negotiated_unless_enabled(node: Any) -> None:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    offer = [ClientPerMessageDeflateFactory()]
    async with connect(
        node.ws_url,
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
        extensions=offer,
        compression=None,
    ) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
