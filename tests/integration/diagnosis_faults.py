"""Fault scenarios of the diagnosis evaluation harness (issue 13), kept apart from the rules.

Each :class:`Fault` says how to reproduce one situation for real — the node's
configuration, and a driver that runs real SDK clients (or the real doctor, a netsim
proxy, a slow PostgreSQL link) against the running node — and what a correct diagnosis
finds: a set of ``(layer, object)`` pairs, where the object is ``device:…``,
``setting:…``, ``node:…`` or ``region:…`` (an empty set: nothing the customer should be
told).  Nothing here names a rule and no rule names a scenario: the expectation is the
ground truth of the injected fault, checked against the public findings only.

``test_diagnosis_harness.py`` runs each fault as a test; ``bench/scenarios.py`` collects
the recorded rows into the confusion matrix of docs/diagnosis.md.

Drivers are kept short (a few seconds of traffic each) so the whole harness stays within
the CI budget; every timing below is the shortest that still produces the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import relaydesk
from relaydesk.client import Client, ConnectError, Message, ReconnectPolicy
from relaydesk.protocol.tokens import mint_token

FAST = ReconnectPolicy(base_s=0.1, max_s=0.4)


@dataclass
class Run:
    """What a driver hands back: extra ticket text and the window start."""

    server: Any
    start_ms: int
    description: str = ""
    reports: list[Any] = field(default_factory=list)  # doctor reports to file with


Driver = Callable[[Any], Awaitable[Run]]


@dataclass(frozen=True)
class Fault:
    name: str
    config: dict[str, Any]
    drive: Driver
    expect: frozenset[tuple[str, str]]
    subject: str
    symptom: str = "other"
    slow: bool = False
    needs: str = ""  # "postgres", "cluster": services the scenario needs
    group: str = ""  # near-threshold | two-faults | clean | cluster (for the matrix)


def _now_ms() -> int:
    return int(time.time() * 1000) - 30_000


def sdk(server: Any, user: str, device: str, **kw: Any) -> Any:
    return relaydesk.connect(
        server.ws_url, server.token(user), device=device, region="eu-west", reconnect=FAST, **kw
    )


async def consume(client: Client, got: list[int], delay_s: float = 0.0) -> None:
    """Read the feed (the SDK acknowledges what it yields), ``delay_s`` per message."""
    async for ev in client.events():
        if isinstance(ev, Message):
            got.append(ev.pos)
            if delay_s:
                await asyncio.sleep(delay_s)


async def until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def _readers(
    server: Any,
    devices: dict[str, float],
    publish: Callable[[Client], Awaitable[int]],
    *,
    settle_s: float,
    **kw: Any,
) -> None:
    """Subscribers (device -> seconds per message), a publisher, then wait for acks."""
    got: dict[str, list[int]] = {d: [] for d in devices}
    async with sdk(server, "pub", "pub-d", receive=False) as pub:
        clients = [await sdk(server, d.split("-")[0], d, **kw) for d in devices]
        tasks = [
            asyncio.create_task(consume(c, got[d], delay))
            for c, (d, delay) in zip(clients, devices.items(), strict=True)
        ]
        try:
            n = await publish(pub)
            await until(lambda: all(len(v) >= n for v in got.values()), settle_s)
            await asyncio.sleep(1.2)  # the last acks reach the node; expiry runs
        finally:
            for t in tasks:
                t.cancel()
            for c in clients:
                await c.aclose()


async def _burst(pub: Client, n: int, *, to: str = "channel:room", lanes: int = 8) -> int:
    async def lane(k: int) -> None:
        for i in range(k, n, lanes):
            await pub.send(to, f"m{i}")

    await asyncio.gather(*(lane(k) for k in range(lanes)))
    return n


# -- drivers -----------------------------------------------------------------------------------


async def clean_light(server: Any) -> Run:
    start = _now_ms()
    devices = {"ann-d": 0.0, "ben-d": 0.0, "cat-d": 0.0}
    await _readers(server, devices, lambda p: _burst(p, 40, lanes=2), settle_s=8)
    return Run(server, start)


async def clean_heavy(server: Any) -> Run:
    """Heavy but healthy: 16 subscribers, 1,200 publishes from 8 pipelining lanes."""
    start = _now_ms()
    devices = {f"u{i}-d": 0.0 for i in range(16)}
    await _readers(server, devices, lambda p: _burst(p, 1200, lanes=8), settle_s=25)
    return Run(server, start)


async def one_shot_publishers(server: Any) -> Run:
    """A backend (``relaydesk send``): connect, publish, close with 1000, a dozen times."""
    start = _now_ms()

    async def publish(_pub: Client) -> int:
        for i in range(12):
            async with sdk(server, "cli", "cli-send", receive=False) as once:
                await once.send("channel:room", f"cron {i}")
        return 12

    await _readers(server, {"ann-d": 0.0, "ben-d": 0.0}, publish, settle_s=8)
    return Run(server, start)


async def slow_reader(server: Any) -> Run:
    """One device's app takes 0.5 s per message: acks arrive seconds late, in order."""
    start = _now_ms()
    devices = {"ann-d": 0.0, "ben-d": 0.0, "slow-d": 0.5}
    await _readers(server, devices, lambda p: _burst(p, 12, lanes=1), settle_s=10)
    return Run(server, start)


async def slow_reader_near_threshold(server: Any) -> Run:
    """Acks just past the 1.5 s deadline: 0.2 s per message, 12 messages at once."""
    start = _now_ms()
    devices = {"ann-d": 0.0, "ben-d": 0.0, "slow-d": 0.2}
    await _readers(server, devices, lambda p: _burst(p, 12, lanes=4), settle_s=8)
    return Run(server, start)


async def small_commit_batch(server: Any) -> Run:
    start = _now_ms()
    await _readers(
        server, {"ann-d": 0.0, "ben-d": 0.0}, lambda p: _burst(p, 400, lanes=16), settle_s=15
    )
    return Run(server, start)


async def slow_reader_and_small_commit_batch(server: Any) -> Run:
    start = _now_ms()
    devices = {"ann-d": 0.0, "ben-d": 0.0, "slow-d": 0.5}

    async def publish(pub: Client) -> int:
        await _burst(pub, 400, lanes=16)
        return 400

    got: dict[str, list[int]] = {d: [] for d in devices}
    async with sdk(server, "pub", "pub-d", receive=False) as pub:
        clients = {d: await sdk(server, d.split("-")[0], d) for d in devices}
        tasks = [asyncio.create_task(consume(c, got[d], devices[d])) for d, c in clients.items()]
        await publish(pub)
        await until(lambda: len(got["ann-d"]) >= 400 and len(got["slow-d"]) >= 10, 15)
        await asyncio.sleep(2.0)
        for t in tasks:
            t.cancel()
        for c in clients.values():
            await c.aclose()
    return Run(server, start)


async def _offline_backlog(server: Any, n: int, devices: list[str]) -> None:
    """Publish ``n`` messages while ``devices`` are offline, then connect them all at
    once: each catches up from storage."""
    async with sdk(server, "pub", "pub-d", receive=False) as pub:
        await _burst(pub, n, lanes=8)
    got: dict[str, list[int]] = {d: [] for d in devices}
    # all at once: their catch-ups compete for the storage readers
    clients = await asyncio.gather(*(sdk(server, d.split("-")[0], d) for d in devices))
    tasks = [asyncio.create_task(consume(c, got[d])) for c, d in zip(clients, devices, strict=True)]
    await until(lambda: all(len(v) >= n for v in got.values()), 25)
    await asyncio.sleep(1.2)
    for t in tasks:
        t.cancel()
    for c in clients:
        await c.aclose()


async def _first_login(server: Any, devices: list[str]) -> None:
    """Log ``devices`` in once so the server has a cursor for them (then they go offline)."""
    for d in devices:
        async with sdk(server, d.split("-")[0], d):
            pass


async def small_catchup_page(server: Any) -> Run:
    start = _now_ms()
    devices = ["ann-d", "ben-d", "cat-d", "dan-d"]
    await _first_login(server, devices)
    await _offline_backlog(server, 400, devices)
    return Run(server, start)


async def _page_history(server: Any, devices: list[str], page: int = 100) -> None:
    """Every device pages back through the channel's history at once: reads that go to
    storage (a catch-up after a short absence is served from the node's memory)."""

    async def one(device: str) -> None:
        async with sdk(server, device.split("-")[0], device, receive=False) as client:
            before: int | None = None
            while True:
                got = await client.history("channel:room", before=before, limit=page)
                if not got.messages or not got.more:
                    return
                before = got.messages[0].seq

    await asyncio.gather(*(one(d) for d in devices))


async def small_reader_pool_and_page(server: Any) -> Run:
    start = _now_ms()
    devices = [f"u{i}-d" for i in range(12)]
    await _first_login(server, devices)
    await _offline_backlog(server, 300, devices)
    # Two readers per user at once, six rounds: reads queue on the one reader thread.
    pagers = devices + [d.replace("-d", "-h") for d in devices]
    for _ in range(6):
        await _page_history(server, pagers)
    return Run(server, start)


async def small_send_queue(server: Any) -> Run:
    start = _now_ms()
    devices = {f"u{i}-d": 0.0 for i in range(5)}
    await _readers(server, devices, lambda p: _burst(p, 300, lanes=16), settle_s=15)
    return Run(server, start)


class FastClock:
    """A device wall clock running ``offset_s`` ahead (monotonic time is unaffected)."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s

    def monotonic(self) -> float:
        return time.monotonic()


async def clock_under_rejection_bound(server: Any) -> Run:
    """Two devices 4 minutes fast: under the 5-minute bound at which probes are refused."""
    start = _now_ms()
    clock = FastClock(240.0)
    async with (
        sdk(server, "ann", "ann-d", probe_interval_s=0.3, clock=clock),
        sdk(server, "ben", "ben-d", probe_interval_s=0.3, clock=clock),
        sdk(server, "cat", "cat-d", probe_interval_s=0.3),
    ):
        await asyncio.sleep(3.5)
    return Run(server, start)


async def doctor_attached_skew(server: Any) -> Run:
    """The customer runs doctor on a phone whose clock is 20 s behind and files the ticket
    with the report: the server saw nothing wrong, the device's own evidence decides."""
    from relaydesk.doctor import DoctorOptions, run_doctor

    class Behind:
        def time(self) -> float:
            return time.time() - 20.0

        def monotonic(self) -> float:
            return time.monotonic()

    start = _now_ms()
    await _readers(server, {"ann-d": 0.0}, lambda p: _burst(p, 10, lanes=1), settle_s=5)
    report = await run_doctor(
        server.ws_url,
        server.token("zoe", device="zoe-phone"),
        options=DoctorOptions(probes=8, probe_interval_s=0.02, device="zoe-phone"),
        clock=Behind(),
    )
    return Run(server, start, reports=[report])


async def token_loop(server: Any) -> Run:
    """A token provider that hands out a token which expired an hour ago."""
    start = _now_ms()
    stale = mint_token(server.app, server.secret, "loop", now=time.time() - 7200, ttl_s=3600)

    async def provider() -> str:
        return stale

    async with sdk(server, "ann", "ann-d"):
        try:
            await relaydesk.connect(
                server.ws_url,
                provider,
                device="loop-d",
                reconnect=ReconnectPolicy(base_s=0.1, max_s=0.3),
                connect_timeout=3.0,
            )
        except ConnectError:
            pass
    return Run(server, start)


async def flapping_link(server: Any) -> Run:
    """Four devices reach the node through one link that is cut three times: they fail
    together on that node (victims, not buggy clients)."""
    from relaydesk.netsim import open_netsim

    start = _now_ms()
    host, port = server.http_url.removeprefix("http://").split(":")
    proxy = await open_netsim(("127.0.0.1", 0), (host, int(port)))
    url = f"ws://127.0.0.1:{proxy.listen_address[1]}/v1/ws"
    devices = ["ann-d", "ben-d", "cat-d", "dan-d"]
    clients = [
        await relaydesk.connect(url, server.token(d[:3]), device=d, reconnect=FAST) for d in devices
    ]
    try:
        for _ in range(3):
            await asyncio.sleep(1.0)
            proxy.cut("reset")
            await asyncio.sleep(0.3)
            proxy.restore()
        await asyncio.sleep(1.5)
    finally:
        for c in clients:
            await c.aclose()
        await proxy.aclose()
    return Run(server, start)


async def dying_link_log(server: Any) -> Run:
    """One device reaches the node through a link that dies five times (every connection
    reset, new ones refused for a moment); another device is direct and healthy.  The
    device's SDK log (closes without a close frame, attempts refused while the link was
    down: more than the server saw) is attached to the ticket with a doctor report run
    from that client."""
    from relaydesk.doctor import DoctorOptions, check_client
    from relaydesk.netsim import open_netsim

    start = _now_ms()
    host, port = server.http_url.removeprefix("http://").split(":")
    proxy = await open_netsim(("127.0.0.1", 0), (host, int(port)))
    url = f"ws://127.0.0.1:{proxy.listen_address[1]}/v1/ws"
    try:
        async with (
            sdk(server, "ann", "ann-d"),
            relaydesk.connect(url, server.token("flo"), device="flo-d", reconnect=FAST) as flo,
        ):
            for _ in range(5):
                await asyncio.sleep(0.6)
                proxy.cut("reset")
                await asyncio.sleep(0.4)
                proxy.restore()
            await until(lambda: flo.state.name == "SYNCED", 10.0)
            report = await check_client(flo, options=DoctorOptions(probes=8, probe_interval_s=0.02))
    finally:
        await proxy.aclose()
    assert sum(e.kind == "close" for e in report.client_log) >= 5, report.client_log
    return Run(server, start, reports=[report])


@dataclass
class Env:
    """What a fault that needs infrastructure gets instead of a ready node: the
    ``make_server`` factory (blocking), the node configuration (telemetry and the fault's
    settings), a fresh PostgreSQL schema, the NATS URL and an exit stack the test closes
    after judging (servers stop before the proxies and the schema go)."""

    make_server: Callable[..., Any]
    config: dict[str, Any]
    pg_url: str
    nats_url: str
    stack: contextlib.AsyncExitStack
    members: list[str]

    async def start(self, config: dict[str, Any], name: str = "node") -> Any:
        server = await asyncio.to_thread(self.make_server, config, name)
        self.stack.callback(server.stop)
        await asyncio.to_thread(server.add_members, self.members)
        return server


async def slow_database(env: Env) -> Run:
    """PostgreSQL 15 ms away each way (a database in another data centre): every commit
    costs many round trips (≈20 measured: ≈600 ms)."""
    from relaydesk.netsim import LinkProfile, open_netsim

    pg = urlsplit(env.pg_url)
    upstream = (pg.hostname or "127.0.0.1", pg.port or 5432)
    proxy = await open_netsim(("127.0.0.1", 0), upstream)
    env.stack.push_async_callback(proxy.aclose)
    url = env.pg_url.replace(f"{pg.netloc}", f"127.0.0.1:{proxy.listen_address[1]}", 1)
    server = await env.start({**env.config, "storage": {"url": url}})
    start = _now_ms()
    for direction in ("upstream", "downstream"):
        proxy.impair(direction, LinkProfile(latency_ms=15.0))  # type: ignore[arg-type]
    await _readers(server, {"ann-d": 0.0}, lambda p: _burst(p, 30, lanes=6), settle_s=20)
    return Run(server, start)


async def cluster_slow_reader(env: Env) -> Run:
    """Two nodes on one PostgreSQL and NATS; the slow device and the publisher are on
    edge-b, the other readers on edge-a (they receive over the bus).  The diagnosis and
    the ticket go through edge-b (the node started last holds the demo desk keys)."""
    from cluster_kit import cluster_config
    from quality_kit import flush

    a = await env.start(cluster_config(env.pg_url, env.nats_url, "edge-a", leader=True), "a")
    b = await env.start(cluster_config(env.pg_url, env.nats_url, "edge-b", leader=False), "b")
    start = _now_ms()
    got: dict[str, list[int]] = {"ann-d": [], "ben-d": [], "slow-d": []}
    async with sdk(b, "pub", "pub-d", receive=False) as pub:
        clients = {
            "ann-d": await sdk(a, "ann", "ann-d"),
            "ben-d": await sdk(a, "ben", "ben-d"),
            "slow-d": await sdk(b, "slow", "slow-d"),
        }
        delays = {"ann-d": 0.0, "ben-d": 0.0, "slow-d": 0.5}
        tasks = [asyncio.create_task(consume(c, got[d], delays[d])) for d, c in clients.items()]
        await _burst(pub, 12, lanes=1)
        await until(lambda: all(len(v) >= 12 for v in got.values()), 12)
        await asyncio.sleep(1.5)
        for t in tasks:
            t.cancel()
        for c in clients.values():
            await c.aclose()
    await asyncio.to_thread(flush, a)
    return Run(b, start)


# -- the table --------------------------------------------------------------------------------

NOTHING: frozenset[tuple[str, str]] = frozenset()

FAULTS: tuple[Fault, ...] = (
    Fault("clean, light load", {}, clean_light, NOTHING, "Is everything fine?", group="clean"),
    Fault(
        "clean, heavy load",
        {},
        clean_heavy,
        NOTHING,
        "Latency under load?",
        symptom="delay",
        slow=True,
        group="clean",
    ),
    Fault(
        "one-shot publishers",
        {},
        one_shot_publishers,
        NOTHING,
        "Our cron job connects every minute",
        symptom="disconnects",
        group="clean",
    ),
    Fault(
        "slow reader",
        {},
        slow_reader,
        frozenset({("client", "device:slow-d")}),
        "Messages are delayed on one device",
        symptom="delay",
    ),
    Fault(
        "slow reader just past the ack deadline",
        {},
        slow_reader_near_threshold,
        frozenset({("client", "device:slow-d")}),
        "Messages are a little late on one device",
        symptom="delay",
        group="near-threshold",
    ),
    Fault(
        "commit batch of 1",
        {"storage": {"commit_batch_max": 1}},
        small_commit_batch,
        frozenset({("server_config", "setting:storage.commit_batch_max")}),
        "Sending is slow under load",
        symptom="delay",
    ),
    Fault(
        "slow reader and commit batch of 1",
        {"storage": {"commit_batch_max": 1}},
        slow_reader_and_small_commit_batch,
        frozenset(
            {
                ("client", "device:slow-d"),
                ("server_config", "setting:storage.commit_batch_max"),
            }
        ),
        "Slow sending and one slow device",
        symptom="delay",
        slow=True,
        group="two-faults",
    ),
    Fault(
        "catch-up page of 1",
        {"gateway": {"catchup_page": 1}},
        small_catchup_page,
        frozenset({("server_config", "setting:gateway.catchup_page")}),
        "Devices take long to sync after being offline",
        symptom="delay",
    ),
    Fault(
        "reader pool of 1 and catch-up page of 10",
        {"storage": {"readers": 1}, "gateway": {"catchup_page": 10}},
        small_reader_pool_and_page,
        frozenset(
            {
                ("server_config", "setting:storage.readers"),
                ("server_config", "setting:gateway.catchup_page"),
            }
        ),
        "Sync after offline is slow for everyone",
        symptom="delay",
        slow=True,
        group="two-faults",
    ),
    Fault(
        "send queue of 4 items",
        {"gateway": {"send_queue_items": 4}},
        small_send_queue,
        frozenset({("server_config", "setting:gateway.send_queue_items")}),
        "Bursts arrive late on every device",
        symptom="delay",
    ),
    Fault(
        "clocks 4 min fast (under the probe rejection bound)",
        {},
        clock_under_rejection_bound,
        frozenset({("client", "region:eu-west")}),
        "Tokens sometimes look invalid",
        group="near-threshold",
    ),
    Fault(
        "doctor report of a phone 20 s behind",
        {},
        doctor_attached_skew,
        frozenset({("client", "device:zoe-phone")}),
        "Timestamps look wrong on one phone",
        group="near-threshold",
    ),
    Fault(
        "a device's link keeps dying, its SDK log attached",
        {},
        dying_link_log,
        frozenset({("network", "device:flo-d")}),
        "One phone keeps reconnecting",
        symptom="disconnects",
        slow=True,
    ),
    Fault(
        "expired token loop",
        {},
        token_loop,
        frozenset({("client", "device:loop-d")}),
        "One device keeps reconnecting",
        symptom="disconnects",
    ),
    Fault(
        "slow database (PostgreSQL 15 ms away)",
        {},
        slow_database,
        frozenset({("server_config", "node:edge-1")}),
        "Every message takes half a second",
        symptom="delay",
        slow=True,
        needs="postgres",
    ),
    Fault(
        "two-node cluster, slow reader on edge-b",
        {},
        cluster_slow_reader,
        frozenset({("client", "device:slow-d")}),
        "One device is late, on the cluster",
        symptom="delay",
        slow=True,
        needs="cluster",
        group="cluster",
    ),
    Fault(
        "flapping link to the node",
        {},
        flapping_link,
        frozenset({("network", "node:edge-1")}),
        "Devices keep disconnecting",
        symptom="disconnects",
    ),
)
