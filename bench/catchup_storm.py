"""Reconnect storm while publishing continues: time to ``synced`` and exactly-once.

Theory of operation
-------------------
The audit's failure (issue 10): thousands of devices reconnect at once while a
publisher keeps going, and many never reach ``synced``.  This step reproduces it:

1. **prime**: ``clients`` devices (one user each; ``group`` users per channel, so
   that the presence announcements of a storm stay linear) log in, join their
   channel and wait for ``synced``; each remembers its cursor and disconnects.
2. **backlog**: a publisher sends to the channels in turn at ``rate`` messages/s
   in all for ``gap_s`` while everyone is away.
3. **storm**: every device reconnects at once with its cursor while the publisher
   goes on for ``tail_s``; then it sends a last message (``end<k>``) to each channel.
4. Each device reads until ``end`` and ``synced``.  Figures: time from sending ``hello`` to
   ``synced`` (p50/p99/max), devices never synced (``never_synced``) and those
   still catching up when the publisher stopped (``synced_after_end``), server
   CPU seconds from the storm to the last ``end``, and the server's own view
   (``/readyz``: devices synced, welcome -> synced p50/max on the server, catch-up
   pages by source) while the publisher still runs; checks: each device received
   every published message after its cursor exactly once, in order.

Clients run in ``procs`` worker processes (``python -m bench.catchup_storm worker``,
steered over stdin/stdout with one-line JSON), so the generator is not the
bottleneck; tests/server/test_catchup_storm.py runs the same code in-process at a
size a shared two-core machine takes.

Alone: ``python -m bench.catchup_storm --clients 1000`` (bounded: a few minutes);
``--baseline-src DIR`` also runs the same storm against another source tree (e.g.
main before this change) in the same run, and reports the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from relaydesk.protocol.codec import client_codec
from relaydesk.protocol.frames import (
    SUBPROTOCOL_MSGPACK,
    Ack,
    Hello,
    Join,
    Messages,
    PubAck,
    Publish,
    Synced,
    Welcome,
)

CODEC = client_codec(SUBPROTOCOL_MSGPACK)
GROUP = 50  # users per channel
PUBLISHER = "publisher"
END = "end"
# The publisher sends what is due every TICK_S: a few messages per group commit, as
# from a busy backend, so that live frames (not messages) do not bind the generator.
TICK_S = 0.05
NODE_TOML = """\
[gateway]
publish_rate = 100000
publish_burst = 100000
heartbeat_timeout_ms = 600000
auth_timeout_ms = 120000
[storage]
sync = "full"
"""
# Frames a device reads without a frame from the server before it gives up.
READ_TIMEOUT_S = 60.0
# How long a device that got ``end`` before ``synced`` waits for ``synced``.
AFTER_END_S = 30.0


def channel_of(index: int, channels: int) -> str:
    return f"room{index % channels}"


@dataclass
class Device:
    user: str
    token: str
    channel: str
    cursor: int = 0
    ws: ClientConnection | None = None
    hello_at: float = 0.0
    synced_after: float | None = None  # seconds from hello to synced
    welcome_after: float | None = None  # seconds from hello to welcome
    end_after: float | None = None  # seconds from hello to the ``end`` message
    go_at: float = 0.0  # when the storm started (the worker got "go")
    received: list[tuple[int, str]] = field(default_factory=list)  # (pos, id) of messages


async def _open(url: str) -> ClientConnection:
    return await connect(
        url,
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
        max_size=2**24,
        open_timeout=120,
        ping_interval=None,
        max_queue=None,
    )


async def _recv(ws: ClientConnection, timeout: float = READ_TIMEOUT_S) -> Any:
    return CODEC.decode(await asyncio.wait_for(ws.recv(), timeout))


async def _send(ws: ClientConnection, frame: Any) -> None:
    await ws.send(CODEC.encode(frame))


async def prime(url: str, dev: Device) -> None:
    """Log in fresh, join the channel, wait for synced; remember the cursor; leave."""
    ws = await _open(url)
    await _send(ws, Hello(token=dev.token, device="d1"))
    await _send(ws, Join(rid=1, channel=dev.channel))
    synced = joined = False
    last = 0
    while not (synced and joined):
        frame = await _recv(ws)
        if isinstance(frame, Messages):
            last = frame.items[-1].pos
        elif isinstance(frame, Synced):
            synced = True
            last = max(last, frame.pos)
        elif getattr(frame, "rid", None) == 1:
            joined = True
    # Any cursor will do: the publisher starts after every device is primed, so all
    # its messages lie after it (later joins of other devices are not counted).
    dev.cursor = last
    await ws.close()


async def storm(url: str, dev: Device) -> None:
    """Reconnect with the cursor; read until the ``end`` message and ``synced``.

    ``end`` may arrive in a catch-up page, and ``synced`` right after that page: a
    device that stopped reading at ``end`` would count as never synced although the
    server handed it over.  So it reads on after ``end`` until ``synced`` (at most
    ``AFTER_END_S``); ``end_after`` tells whether it was still catching up then."""
    ws = await _open(url)
    dev.hello_at = time.monotonic()
    await _send(ws, Hello(token=dev.token, device="d1", cursor=dev.cursor))
    acked = dev.cursor
    while True:
        if dev.end_after is not None:
            try:
                frame = await _recv(ws, AFTER_END_S)
            except TimeoutError:
                break  # never synced
        else:
            frame = await _recv(ws)
        if isinstance(frame, Synced):
            dev.synced_after = time.monotonic() - dev.hello_at
            if dev.end_after is not None:
                break
        elif isinstance(frame, Messages):
            done = False
            for ev in frame.items:
                if ev.kind == "msg" and ev.sender == PUBLISHER:
                    dev.received.append((ev.pos, ev.id))
                    done = done or ev.id.startswith(END)
            last = frame.items[-1].pos
            if last - acked >= 256:
                await _send(ws, Ack(pos=last))
                acked = last
            if done:
                dev.end_after = time.monotonic() - dev.hello_at
                if dev.synced_after is not None:
                    break
        elif isinstance(frame, Welcome):
            dev.welcome_after = time.monotonic() - dev.hello_at
    await ws.close()


class Publisher:
    """One connection publishing ``p<i>`` to the channel at a steady rate."""

    def __init__(self, url: str, token: str, channels: int, tick_s: float = TICK_S) -> None:
        self.url, self.token, self.channels = url, token, channels
        self.tick_s = tick_s
        self.positions: dict[str, int] = {}
        self.sent = 0
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._ws = await _open(self.url)
        await _send(self._ws, Hello(token=self.token, device="pub"))
        for k in range(self.channels):
            await _send(self._ws, Join(rid=k + 1, channel=channel_of(k, self.channels)))
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for data in self._ws:
            frame = CODEC.decode(data)
            if isinstance(frame, PubAck):
                self.positions[frame.id] = frame.pos
            elif getattr(frame, "code", None):
                raise RuntimeError(f"publisher got {frame}")

    async def run(self, rate: float, seconds: float) -> None:
        assert self._ws is not None
        start = time.monotonic()
        first = self.sent
        while (elapsed := time.monotonic() - start) < seconds:
            due = first + int(elapsed * rate)
            while self.sent < due:
                to = f"channel:{channel_of(self.sent, self.channels)}"
                await _send(self._ws, Publish(id=f"p{self.sent}", to=to, body=b"x" * 64))
                self.sent += 1
            await asyncio.sleep(self.tick_s)

    async def finish(self) -> None:
        """Send ``end`` and wait until every message has its puback."""
        assert self._ws is not None and self._reader is not None
        for k in range(self.channels):
            to = f"channel:{channel_of(k, self.channels)}"
            await _send(self._ws, Publish(id=f"{END}{k}", to=to, body=b"end"))
        deadline = time.monotonic() + 60
        while len(self.positions) < self.sent + self.channels:
            if self._reader.done():
                self._reader.result()
            if time.monotonic() > deadline:
                raise RuntimeError(f"pubacks: {len(self.positions)} of {self.sent + self.channels}")
            await asyncio.sleep(0.02)
        await self._ws.close()
        with contextlib.suppress(Exception):
            await self._reader

    def channel_of_id(self, mid: str) -> str:
        n = int(mid[len(END) :] if mid.startswith(END) else mid[1:])
        return channel_of(n, self.channels)

    def expected_after(self, cursor: int, channel: str) -> list[tuple[int, str]]:
        return sorted(
            (pos, mid)
            for mid, pos in self.positions.items()
            if pos > cursor and self.channel_of_id(mid) == channel
        )


def check(devices: list[Device], publisher: Publisher) -> list[str]:
    """Every device got every message after its cursor exactly once, in order."""
    problems = []
    for dev in devices:
        want = publisher.expected_after(dev.cursor, dev.channel)
        if dev.received != want:
            got = {m for _, m in dev.received}
            missing = [m for _, m in want if m not in got][:5]
            dups = len(dev.received) - len(got)
            problems.append(
                f"{dev.user}: {len(dev.received)} received, {len(want)} expected,"
                f" missing {missing}, {dups} duplicates"
            )
    return problems


def summary(synced_after: list[float | None], cpu_s: float | None) -> dict[str, Any]:
    times = sorted(t for t in synced_after if t is not None)

    def pct(q: float) -> float | None:
        return round(times[min(len(times) - 1, int(q * len(times)))], 3) if times else None

    return {
        "clients": len(synced_after),
        "never_synced": sum(1 for t in synced_after if t is None),
        "synced_p50_s": pct(0.5),
        "synced_p99_s": pct(0.99),
        "synced_max_s": round(times[-1], 3) if times else None,
        "server_cpu_s": None if cpu_s is None else round(cpu_s, 2),
    }


# ------------------------------------------------------------------ worker processes


async def _worker(url: str, tokens: list[tuple[str, str, str]]) -> None:
    """Steered over stdin/stdout: prime, print cursors, wait for 'go', storm, report."""
    devices = [Device(user, token, channel) for user, token, channel in tokens]
    sem = asyncio.Semaphore(100)  # logins in parallel while priming (not in the storm)

    async def primed(dev: Device) -> None:
        async with sem:
            await prime(url, dev)

    await asyncio.gather(*(primed(d) for d in devices))
    print(json.dumps({"primed": {d.user: d.cursor for d in devices}}), flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    assert line.strip() == "go", line
    go_at = time.monotonic()
    for d in devices:
        d.go_at = go_at
    await asyncio.gather(*(storm(url, d) for d in devices))
    print(
        json.dumps(
            {
                "done": {
                    d.user: [
                        d.cursor,
                        d.synced_after,
                        d.welcome_after,
                        d.received,
                        d.end_after,
                        d.hello_at - d.go_at,
                    ]
                    for d in devices
                }
            }
        ),
        flush=True,
    )


def _catchup_view(ready_url: str) -> Any:
    """The server's own view of catch-up (``/readyz``), None if it has none."""
    with contextlib.suppress(OSError, KeyError, ValueError):
        with urllib.request.urlopen(ready_url, timeout=10) as resp:
            return json.loads(resp.read())["catchup"]
    return None


def _expect(proc: subprocess.Popen[str], key: str) -> Any:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"storm worker exited ({proc.poll()}) before {key!r}")
    return json.loads(line)[key]


async def run_storm(
    url: str,
    mint: Callable[[str, list[str]], str],
    *,
    clients: int,
    group: int = GROUP,
    tick_s: float = TICK_S,
    ready_url: str = "",
    procs: int,
    rate: float,
    gap_s: float,
    tail_s: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """The whole storm against ``url``; ``mint(user, channels)`` returns a token for
    ``user`` with grants to join ``channels``.  Returns figures and the check."""
    from bench.servers import cpu_seconds

    channels = -(-clients // group)
    users = [f"s{i}" for i in range(clients)]
    channel = {u: channel_of(i, channels) for i, u in enumerate(users)}
    shares = [users[i::procs] for i in range(procs)]
    env = dict(os.environ)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.catchup_storm", "worker", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in shares
    ]
    try:
        for proc, share in zip(workers, shares, strict=True):
            assert proc.stdin is not None
            rows = [[u, mint(u, [channel[u]]), channel[u]] for u in share]
            proc.stdin.write(json.dumps(rows) + "\n")
            proc.stdin.flush()
        loop = asyncio.get_running_loop()
        cursors: dict[str, int] = {}
        for proc in workers:
            cursors.update(await loop.run_in_executor(None, _expect, proc, "primed"))
        everywhere = [channel_of(k, channels) for k in range(channels)]
        publisher = Publisher(url, mint(PUBLISHER, everywhere), channels, tick_s)
        await publisher.open()
        await publisher.run(rate, gap_s)  # the backlog builds while everyone is away
        cpu0 = cpu_seconds(server_pid) if server_pid else None
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        await publisher.run(rate, tail_s)
        server_view = None
        if ready_url:  # while every device is still connected and the tail moves
            server_view = await loop.run_in_executor(None, _catchup_view, ready_url)
        await publisher.finish()
        done: dict[str, Any] = {}
        for proc in workers:
            done.update(await loop.run_in_executor(None, _expect, proc, "done"))
        cpu = cpu_seconds(server_pid) - cpu0 if server_pid and cpu0 is not None else None
    finally:
        for proc in workers:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)
    devices = []
    for user in users:
        cursor, synced_after, welcome_after, received, end_after, hello_delay = done[user]
        dev = Device(user, "", channel[user], cursor)
        dev.hello_at = hello_delay  # seconds from the storm's start to this hello
        dev.synced_after = synced_after
        dev.welcome_after = welcome_after
        dev.end_after = end_after
        dev.received = [(p, m) for p, m in received]
        devices.append(dev)
    result = summary([d.synced_after for d in devices], cpu)
    # Still catching up when the publisher stopped (their synced came after ``end``):
    # what this step reported as never synced before it read on past ``end``.
    late = [
        d
        for d in devices
        if d.synced_after is not None and d.end_after is not None and d.synced_after > d.end_after
    ]
    result["synced_after_end"] = len(late)
    # The generator's own pace: how long after the storm's start each device could
    # send its hello (a slow handshake is not slow catch-up), and for the devices
    # synced only after ``end``, the earliest of their hellos.
    delays = sorted(d.hello_at for d in devices)
    result["hello_delay_p50_s"] = round(delays[len(delays) // 2], 3) if delays else None
    result["hello_delay_max_s"] = round(delays[-1], 3) if delays else None
    result["synced_after_end_first_hello_s"] = (
        round(min(d.hello_at for d in late), 3) if late else None
    )
    # welcome -> synced: the catch-up itself, without the login (on a small machine the
    # generator's own handshakes dominate hello -> welcome).
    welcomes = sorted(d.welcome_after for d in devices if d.welcome_after is not None)
    catchup = sorted(
        d.synced_after - d.welcome_after
        for d in devices
        if d.synced_after is not None and d.welcome_after is not None
    )

    def pct(xs: list[float], q: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None

    result["welcome_p50_s"] = pct(welcomes, 0.5)
    result["welcome_max_s"] = pct(welcomes, 1.0)
    result["catchup_p50_s"] = pct(catchup, 0.5)
    result["catchup_p99_s"] = pct(catchup, 0.99)
    result["catchup_max_s"] = pct(catchup, 1.0)
    result["server_catchup"] = server_view
    result["published"] = publisher.sent + publisher.channels
    result["backlog_messages"] = int(rate * gap_s)
    result["problems"] = check(devices, publisher)
    return result


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from bench import servers
    from relaydesk.protocol.tokens import mint_token
    from relaydesk.server.storage_setup import DEMO_APP

    class Node(servers.RelaydeskServer):
        def __init__(self, src: str | None) -> None:
            super().__init__()
            if src:
                self.src_dir = Path(src)

        def config_text(self) -> str:
            # The default settings, except that the one publisher may burst and that
            # logins may take long (the generator's own handshakes are the bottleneck
            # on a small machine; the storm measures catch-up, not login).
            return NODE_TOML

    runs: dict[str, Any] = {}
    for label, src in (("this tree", None), ("baseline", args.baseline_src)):
        if label == "baseline" and not src:
            continue
        with Node(src) as node:
            url = f"ws://127.0.0.1:{node.port}/v1/ws"

            def mint(user: str, channels: list[str], secret: str = node.secret) -> str:
                return mint_token(
                    DEMO_APP,
                    secret,
                    user,
                    now=time.time(),
                    ttl_s=3600,
                    channels=dict.fromkeys(channels, "member"),
                )

            runs[label] = asyncio.run(
                run_storm(
                    url,
                    mint,
                    clients=args.clients,
                    procs=args.procs,
                    rate=args.rate,
                    gap_s=args.gap_s,
                    tail_s=args.tail_s,
                    server_pid=node.pid,
                    ready_url=f"http://127.0.0.1:{node.port}/readyz",
                )
            )
            runs[label]["problems"] = runs[label]["problems"][:5]
    return {
        "load": os.getloadavg(),
        "method": vars(args),
        "runs": runs,
    }


def run(quick: bool) -> dict[str, Any]:
    """The step as ``bench.run`` calls it (``--only storm``): 1,000 devices, or 300
    for ``--quick``; set RELAYDESK_BENCH_BASELINE_SRC to also run another tree."""
    args = argparse.Namespace(
        clients=300 if quick else 1000,
        procs=2,
        rate=450.0,
        gap_s=5.0,
        tail_s=10.0 if quick else 20.0,
        baseline_src=os.environ.get("RELAYDESK_BENCH_BASELINE_SRC", ""),
    )
    return _bench(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        tokens = json.loads(sys.stdin.readline())
        asyncio.run(_worker(argv[1], [(u, t, c) for u, t, c in tokens]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=450.0)
    parser.add_argument("--gap-s", type=float, default=5.0)
    parser.add_argument("--tail-s", type=float, default=20.0)
    parser.add_argument("--baseline-src", default="")
    args = parser.parse_args(argv)
    print(json.dumps(_bench(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
