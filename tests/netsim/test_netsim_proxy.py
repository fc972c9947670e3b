"""The impairment proxy over real loopback sockets: latency, bandwidth, cuts, control API."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from relaydesk.netsim import (
    ControlServer,
    LinkProfile,
    Netsim,
    open_control,
    open_netsim,
)

LOCAL = "127.0.0.1"


@dataclass
class Echo:
    server: asyncio.Server
    port: int
    tasks: set[asyncio.Task[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    tasks: set[asyncio.Task[None]] = set()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await _echo(r, w)
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(handler, LOCAL, 0)
    yield Echo(server, server.sockets[0].getsockname()[1], tasks)
    server.close()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[Netsim]:
    netsim = await open_netsim((LOCAL, 0), (LOCAL, echo.port))
    yield netsim
    await netsim.aclose()


@pytest.fixture
async def control(proxy: Netsim) -> AsyncIterator[ControlServer]:
    server = await open_control(proxy, (LOCAL, 0))
    yield server
    await server.aclose()


async def _rtts(port: int, n: int = 15) -> list[float]:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    samples = []
    try:
        for i in range(n):
            payload = f"ping-{i:04d}".encode()
            t0 = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
            samples.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return samples


async def test_added_latency_matches_configuration(echo: Echo, proxy: Netsim) -> None:
    direct = statistics.median(await _rtts(echo.port))
    proxy.impair("upstream", LinkProfile(latency_ms=30))
    proxy.impair("downstream", LinkProfile(latency_ms=20))
    through = statistics.median(await _rtts(proxy.listen_address[1]))
    added_ms = (through - direct) * 1000
    print(f"configured 50 ms round trip, measured added {added_ms:.1f} ms")
    # Timer slack and two extra loopback hops; never less than configured.
    assert 49.0 <= added_ms <= 50.0 + 15.0


async def test_jitter_spreads_rtt_but_keeps_bytes_in_order(proxy: Netsim) -> None:
    proxy.impair("downstream", LinkProfile(latency_ms=20, jitter_ms=15))
    reader, writer = await asyncio.open_connection(LOCAL, proxy.listen_address[1])
    sent = b"".join(f"{i:06d}".encode() for i in range(3000))
    for i in range(0, len(sent), 600):  # many small chunks, each drawing its own delay
        writer.write(sent[i : i + 600])
        await writer.drain()
        await asyncio.sleep(0.001)
    got = await asyncio.wait_for(reader.readexactly(len(sent)), 10)
    writer.close()
    assert got == sent


async def test_bandwidth_cap_is_measured_within_tolerance(proxy: Netsim) -> None:
    cap_bps = 4_000_000  # 500 kB/s downstream
    proxy.impair("downstream", LinkProfile(bandwidth_bps=cap_bps))
    reader, writer = await asyncio.open_connection(LOCAL, proxy.listen_address[1])
    size = 600_000

    async def send() -> None:
        writer.write(b"x" * size)
        await writer.drain()

    sender = asyncio.create_task(send())
    first = await reader.readexactly(1)
    t0 = time.perf_counter()
    rest = await asyncio.wait_for(reader.readexactly(size - 1), 20)
    elapsed = time.perf_counter() - t0
    await sender
    writer.close()
    assert len(first) + len(rest) == size
    measured = (size - 1) * 8 / elapsed
    print(f"cap {cap_bps / 1e6:.2f} Mbit/s, measured {measured / 1e6:.3f} Mbit/s")
    assert 0.85 * cap_bps <= measured <= 1.10 * cap_bps


async def test_slow_receiver_backpressures_the_sender(proxy: Netsim) -> None:
    """A capped link stops reading from the sender instead of buffering without bound."""
    proxy.impair("upstream", LinkProfile(bandwidth_bps=80_000))  # 10 kB/s
    _reader, writer = await asyncio.open_connection(LOCAL, proxy.listen_address[1])
    # More than the socket buffers can absorb at full autotuning (tcp_wmem max 4 MiB +
    # tcp_rmem max 32 MiB on this kernel): 8 MB sometimes fitted and drain() returned.
    writer.write(b"y" * 64_000_000)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 1.0)  # the sender is held back
    stats = proxy.statistics()
    assert stats.backpressure_waits > 0
    assert stats.bytes_upstream < 50_000
    writer.transport.abort()


async def _echo_once(port: int, payload: bytes = b"hello", timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_cut_breaks_connections_and_restore_lets_new_ones_through(proxy: Netsim) -> None:
    port = proxy.listen_address[1]
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"

    proxy.cut()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _echo_once(port)

    proxy.restore()
    assert await _echo_once(port) == b"hello"
    stats = proxy.statistics()
    assert (stats.cuts, stats.restores) == (1, 1)
    assert stats.connections_refused == 1


async def test_cut_in_hold_mode_parks_new_connections_until_restore(proxy: Netsim) -> None:
    port = proxy.listen_address[1]
    proxy.cut("hold")
    pending = asyncio.create_task(_echo_once(port, b"parked", timeout=5))
    await asyncio.sleep(0.3)
    assert not pending.done()
    assert proxy.statistics().connections_held == 1
    proxy.restore()
    assert await pending == b"parked"


async def test_reset_probability_one_resets_on_first_chunk(proxy: Netsim) -> None:
    proxy.impair("upstream", LinkProfile(reset_probability=1.0))
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _echo_once(proxy.listen_address[1])
    assert proxy.statistics().connections_reset == 1


async def test_unreachable_upstream_resets_the_client() -> None:
    netsim = await open_netsim((LOCAL, 0), (LOCAL, 1))
    try:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _echo_once(netsim.listen_address[1])
        assert netsim.statistics().upstream_failures == 1
    finally:
        await netsim.aclose()


async def test_aclose_ends_live_connections(echo: Echo) -> None:
    netsim = await open_netsim((LOCAL, 0), (LOCAL, echo.port))
    reader, writer = await asyncio.open_connection(LOCAL, netsim.listen_address[1])
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await asyncio.wait_for(netsim.aclose(), 2)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()


# -- control API -------------------------------------------------------------------------


def _url(control: ControlServer, path: str) -> str:
    host, port = control.address
    return f"http://{host}:{port}{path}"


async def test_control_api_state_impair_cut_restore(control: ControlServer, proxy: Netsim) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        state = (await http.get(_url(control, "/state"))).json()
        assert state["cut"] is False
        assert state["upstream_profile"]["latency_ms"] == 0.0

        r = await http.post(
            _url(control, "/impair"),
            json={"direction": "downstream", "latency_ms": 40, "bandwidth_bps": 1_000_000},
        )
        assert r.status_code == 200, r.text
        assert r.json()["downstream_profile"]["latency_ms"] == 40
        assert proxy.profile("downstream") == LinkProfile(latency_ms=40, bandwidth_bps=1_000_000)
        assert proxy.profile("upstream") == LinkProfile()

        r = await http.post(_url(control, "/impair"), json={"jitter_ms": 5})  # both, merged
        assert proxy.profile("downstream").latency_ms == 40
        assert proxy.profile("upstream").jitter_ms == 5
        r = await http.post(_url(control, "/impair"), json={"bandwidth_bps": None})
        assert proxy.profile("downstream").bandwidth_bps is None

        r = await http.post(_url(control, "/cut"), json={"mode": "hold"})
        assert r.json()["cut"] is True and r.json()["cut_mode"] == "hold"
        r = await http.post(_url(control, "/restore"))
        assert r.json()["cut"] is False and r.json()["stats"]["cuts"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"latency_ms": -5}', "latency_ms"),
        (b'{"latency_ms": "fast"}', "latency_ms"),
        (b'{"direction": "sideways"}', "direction"),
        (b'{"reset_probability": 2}', "reset_probability"),
        (b'{"bandwidth_bps": 1}', "bandwidth_bps"),
        (b'{"latency": 5}', "unknown field"),
        (b"[1, 2]", "invalid /impair body"),
    ],
)
async def test_control_api_rejects_malformed_impair(
    control: ControlServer, proxy: Netsim, body: bytes, message: str
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.post(_url(control, "/impair"), content=body)
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert proxy.profile("upstream") == LinkProfile()  # nothing half-applied


async def _raw_request(control: ControlServer, data: bytes) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(*control.address)
    writer.write(data)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def test_control_api_rejects_oversized_input(control: ControlServer) -> None:
    status, body = await _raw_request(
        control, b"POST /impair HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100
    )
    assert status == 400 and "exceeds the 4096-byte limit" in body

    status, body = await _raw_request(
        control, b"GET /state HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    assert status == 400 and "request head exceeds" in body

    status, body = await _raw_request(
        control, b"POST /cut HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert status == 400 and "chunked" in body

    status, body = await _raw_request(control, b"garbage\r\n\r\n")
    assert status == 400 and "malformed" in body


async def test_control_api_routes_and_methods(control: ControlServer) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(_url(control, "/nope"))).status_code == 404
        r = await http.get(_url(control, "/impair"))
        assert r.status_code == 405 and "takes POST" in r.json()["error"]
        r = await http.post(_url(control, "/cut"), json={"mode": "later"})
        assert r.status_code == 400 and "mode" in r.json()["error"]
