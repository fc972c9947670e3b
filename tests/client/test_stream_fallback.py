"""The HTTP-streaming fallback (docs/protocol.md §9) against a real node.

The SDK over ``/v1/stream``: delivery, resume after a lost link and exactly-once;
the automatic choice behind a proxy that refuses or stalls the WebSocket upgrade;
and the bad input of §9.5: another client's stream id, oversized batches, a stream
nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

import relaydesk
from relaydesk.client import Client, MemoryCursorStore, Message, ReconnectPolicy
from relaydesk.client.streaming import AutoOpener, StreamLink, stream_url
from relaydesk.netsim.blocker import open_upgrade_blocker
from relaydesk.protocol.errors import ErrorCode

FAST = ReconnectPolicy(base_s=0.05, max_s=0.5)
# A small output budget, so that the client that does not read its stream meets it fast
# (the others read theirs: the budget never binds for them).
BUDGET = 64 * 1024
CONFIG = {"gateway": {"send_queue_bytes": BUDGET, "reply_drain_timeout_ms": 1000}}


@pytest.fixture(scope="module")
def node(make_module_server: Callable[..., Any]) -> Iterator[Any]:
    """One node for the module (a node takes seconds to start on a busy machine);
    each test uses its own users."""
    server = make_module_server(CONFIG, name="stream")
    yield server
    server.stop()


async def messages(events: AsyncIterator[Any], n: int, timeout: float = 15.0) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            ev = await anext(events)
            if isinstance(ev, Message):
                out.append(ev)
    return out


def stream(server: Any, user: str, device: str, **kw: Any) -> Any:
    return relaydesk.connect(
        server.ws_url, server.token(user), device=device, reconnect=FAST, transport="stream", **kw
    )


async def test_delivery_resume_and_exactly_once_over_the_stream(node: Any) -> None:
    """200 messages, the recipient's link cut twice and the recipient restarted once
    (resuming from its stored cursor): each message arrives once, in order."""
    store = MemoryCursorStore()
    got: list[str] = []
    async with stream(node, "alice", "a1") as alice:
        assert isinstance(alice._runner._link, StreamLink)
        bob: Client = await stream(node, "bob", "b1", cursor_store=store)
        events = bob.events()
        sent = [(await alice.send("user:bob", f"m{i}")).seq for i in range(50)]
        got += [m.text for m in await messages(events, 30)]
        link = bob._runner._link
        assert isinstance(link, StreamLink)
        await link._response.aclose()  # type: ignore[union-attr]  # the link dies mid-feed
        sent += [(await alice.send("user:bob", f"m{i}")).seq for i in range(50, 120)]
        got += [m.text for m in await messages(events, 60)]
        await bob.aclose()  # a restart: the next process resumes from the stored cursor
        sent += [(await alice.send("user:bob", f"m{i}")).seq for i in range(120, 200)]
        async with stream(node, "bob", "b1", cursor_store=store) as bob2:
            got += [m.text for m in await messages(bob2.events(), 200 - len(got))]
    assert sent == list(range(1, 201))
    # bob's close acknowledged what the application took: the restarted process
    # resumes right after it, so every message surfaced exactly once, in order.
    assert got == [f"m{i}" for i in range(200)]


async def test_exactly_once_within_a_process_across_lost_links(node: Any) -> None:
    async with (
        stream(node, "carol", "a1") as alice,
        stream(node, "dave", "b1") as bob,
    ):
        events = bob.events()
        for round_ in range(3):
            for i in range(40):
                await alice.send("user:dave", f"r{round_}-{i}")
            link = bob._runner._link
            assert isinstance(link, StreamLink)
            await link._response.aclose()  # type: ignore[union-attr]
        got = [m.text for m in await messages(events, 120)]
        assert got == [f"r{r}-{i}" for r in range(3) for i in range(40)]
        with pytest.raises(TimeoutError):
            await messages(events, 1, timeout=0.5)  # nothing repeated


@pytest.mark.parametrize("mode", ["refuse", "stall"])
async def test_auto_falls_back_when_the_upgrade_is_blocked(node: Any, mode: str) -> None:
    upstream = ("127.0.0.1", node.port)
    async with await open_upgrade_blocker(upstream, mode) as proxy:  # type: ignore[arg-type]
        host, port = proxy.listen_address
        url = f"ws://{host}:{port}/v1/ws"
        opener = AutoOpener(stall_s=0.5)
        async with (
            relaydesk.connect(
                url, node.token(f"eve{mode}"), device="a1", opener=opener, reconnect=FAST
            ) as alice,
            relaydesk.connect(
                url, node.token(f"fay{mode}"), device="b1", opener=opener, reconnect=FAST
            ) as bob,
        ):
            events = bob.events()
            receipt = await alice.send(f"user:fay{mode}", "through the proxy")
            [msg] = await messages(events, 1)
            assert (msg.text, msg.seq) == ("through the proxy", receipt.seq)
        assert opener.last == "stream" and opener.fallbacks == 1  # sticky after the first
        assert proxy.upgrades_blocked == 1 and proxy.requests_relayed >= 2


async def test_auto_keeps_the_websocket_when_it_works(node: Any) -> None:
    opener = AutoOpener()
    async with relaydesk.connect(
        node.ws_url, node.token("gus"), device="a1", opener=opener
    ) as alice:
        await alice.send("user:gus", "self")
    assert opener.last == "websocket" and opener.fallbacks == 0


# -- bad input (§9.5) ---------------------------------------------------------------------


async def open_raw(server: Any, user: str, device: str) -> tuple[httpx.AsyncClient, Any, str]:
    """A stream opened by hand: (client, streaming response, stream id)."""
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None))
    hello = msgspec.json.encode({"t": "hello", "token": server.token(user), "device": device})
    response = await http.send(
        http.build_request("POST", stream_url(server.ws_url), content=hello), stream=True
    )
    assert response.status_code == 200
    return http, response, response.headers["x-relaydesk-stream"]


async def test_another_clients_stream_id_is_refused(node: Any) -> None:
    http, response, sid = await open_raw(node, "hal", "a1")
    url = f"{stream_url(node.ws_url)}/{sid}"
    ping = b'{"t":"ping","ts":1}'
    try:
        own = await http.post(
            url, content=ping, headers={"authorization": f"Bearer {node.token('hal')}"}
        )
        assert own.status_code == 204
        other = await http.post(
            url, content=ping, headers={"authorization": f"Bearer {node.token('ivy')}"}
        )
        assert other.status_code == 403
        assert other.json()["error"]["code"] == ErrorCode.FORBIDDEN
        bare = await http.post(url, content=ping)
        assert (bare.status_code, bare.json()["error"]["code"]) == (401, ErrorCode.TOKEN_INVALID)
        forged = await http.post(url, content=ping, headers={"authorization": "Bearer a.b.c"})
        assert forged.status_code == 401
        unknown = await http.post(
            url + "x",
            content=ping,
            headers={"authorization": f"Bearer {node.token('hal')}"},
        )
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, ErrorCode.NOT_FOUND)
        # Alice's stream got her ping's pong and nothing of bob's.
        lines = response.aiter_lines()
        seen = []
        async with asyncio.timeout(5):
            async for line in lines:
                if line.startswith("data: {"):
                    frame = msgspec.json.decode(line[6:])
                    if "t" in frame:  # not the open event
                        seen.append(frame["t"])
                    if seen.count("pong") == 1 and "welcome" in seen:
                        break
        assert seen[0] == "welcome" and seen.count("pong") == 1
    finally:
        await response.aclose()
        await http.aclose()


async def test_bad_open_requests_are_refused(node: Any) -> None:
    url = stream_url(node.ws_url)
    async with httpx.AsyncClient(timeout=5) as http:
        bad_token = await http.post(url, content=b'{"t":"hello","token":"x.y.z","device":"d"}')
        assert (bad_token.status_code, bad_token.json()["error"]["code"]) == (401, 4010)
        not_hello = await http.post(url, content=b'{"t":"ping","ts":1}')
        assert not_hello.json()["error"]["code"] == ErrorCode.NOT_AUTHENTICATED
        junk = await http.post(url, content=b"\xff not json")
        assert (junk.status_code, junk.json()["error"]["code"]) == (400, ErrorCode.BAD_FRAME)
        huge = await http.post(url, content=b"x" * (64 * 1024))
        assert (huge.status_code, huge.json()["error"]["code"]) == (413, ErrorCode.FRAME_TOO_LARGE)


async def test_oversized_batches_are_refused_whole(node: Any) -> None:
    http, response, sid = await open_raw(node, "jon", "a1")
    url = f"{stream_url(node.ws_url)}/{sid}"
    auth = {"authorization": f"Bearer {node.token('jon')}"}
    try:
        too_many = await http.post(url, content=b'{"t":"ping","ts":1}\n' * 257, headers=auth)
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == ErrorCode.FRAME_TOO_LARGE
        too_big = await http.post(url, content=b"x" * (256 * 1024 + 1), headers=auth)
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, 4031)
        ok = await http.post(url, content=b'{"t":"ping","ts":1}\n' * 256, headers=auth)
        assert ok.status_code == 204  # at the limit: accepted, and the stream lives on
    finally:
        await response.aclose()
        await http.aclose()


@pytest.mark.timeout(60)
async def test_a_stream_nobody_reads_is_closed_and_dropped(node: Any) -> None:
    """History replies to a client that never reads its stream: SLOW_READER, the
    POSTs are refused as the stream ends, and the node lets go of the connection."""
    server = node
    baseline = httpx.get(server.http_url + "/readyz").json()["connections"]
    async with stream(server, "kim", "k1") as kim:
        for i in range(12):
            await kim.send("user:lee", "x" * 30_000, id=f"big{i}")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    hello = msgspec.json.encode({"t": "hello", "token": server.token("lee"), "device": "l1"})
    await loop.sock_sendall(
        sock,
        b"POST /v1/stream HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(hello) + hello,
    )
    head = b""
    while (
        b"x-relaydesk-stream: " not in head or not head.endswith(b"\r\n") or b"\r\n\r\n" not in head
    ):
        head += await loop.sock_recv(sock, 1)
    sid = head.split(b"x-relaydesk-stream: ")[1].split(b"\r\n")[0].decode()
    url = f"{server.http_url}/v1/stream/{sid}"
    auth = {"authorization": f"Bearer {server.token('lee')}"}
    query = b'{"t":"history_q","rid":%d,"conv":"dm:kim:lee","limit":100}'
    statuses: list[int] = []
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async with asyncio.timeout(30):
                rid = 0
                while not statuses or statuses[-1] == 204:
                    batch = b"\n".join(query % (rid + i) for i in range(20))
                    rid += 20
                    statuses.append((await http.post(url, content=batch, headers=auth)).status_code)
            assert statuses[-1] == 404  # the stream ended: the client must open a new one
            async with asyncio.timeout(15):
                while True:
                    ready = (await http.get(server.http_url + "/readyz")).json()
                    if ready["connections"] <= baseline:
                        break
                    await asyncio.sleep(0.2)
            # The node aborted the TCP connection: reading now finds its end, not a
            # response that goes on (a kept-alive connection would never end).
            async with asyncio.timeout(15):
                with contextlib.suppress(ConnectionResetError):
                    while await loop.sock_recv(sock, 65536):
                        pass
        log = server.log_path.read_text()
        assert "Traceback" not in log
    finally:
        sock.close()


@pytest.mark.parametrize("transport", ["websocket", "stream"])
async def test_a_network_change_reconnects_at_once_and_resumes(node: Any, transport: str) -> None:
    """``Client.network_changed`` (docs/protocol.md §6.2): the link is dropped and made
    again without a back-off wait, and nothing sent meanwhile is lost or repeated."""
    slow = ReconnectPolicy(base_s=30.0, max_s=60.0)  # a back-off wait would show
    async with (
        relaydesk.connect(
            node.ws_url, node.token(f"nc{transport}"), device="n1", transport=transport
        ) as sender,
        relaydesk.connect(
            node.ws_url, node.token(f"nr{transport}"), device="r1", reconnect=slow,
            transport=transport,
        ) as mobile,
    ):  # fmt: skip
        events = mobile.events()
        await sender.send(f"user:nr{transport}", "before")
        assert [m.text for m in await messages(events, 1)] == ["before"]
        mobile.network_changed()
        await sender.send(f"user:nr{transport}", "during")
        async with asyncio.timeout(10):  # far below the 30 s back-off
            while mobile.statistics().connects < 2 or mobile.state.name != "SYNCED":
                await asyncio.sleep(0.02)
        await sender.send(f"user:nr{transport}", "after")
        assert [m.text for m in await messages(events, 2)] == ["during", "after"]
        assert mobile.statistics().network_changes == 1
