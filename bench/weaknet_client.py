"""One weak-network measurement, run inside the clients' network namespace.

    python -m bench.weaknet_client --system relaydesk-ws --host H --port P --n 100 --rate 20

A publisher and a subscriber of one system, both in this process (one clock): the
subscriber connects, the process prints ``ready`` and waits for ``go`` on stdin (the
parent snapshots the byte counters), the publisher sends ``n`` 100-byte messages at
``rate`` per second, and the subscriber counts what arrives until everything did or
``--wait`` seconds after the last publish.  One JSON line on stdout: publish-to-delivery
latencies, messages lost, reconnects.

relaydesk runs through its SDK (``transport="websocket"`` or ``"stream"``: outbox,
resume and dedup included), Mosquitto through QoS 1 (PUBLISH/PUBACK, clean session,
no reconnect logic: a lost connection loses what was in flight), the plain WebSocket
peer through ``websockets`` (no acks, no reconnect).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

PAYLOAD = 100


def _payload(i: int) -> bytes:
    return f"{i}:{time.monotonic():.6f}:".encode().ljust(PAYLOAD, b".")


def _parse(data: bytes) -> tuple[int, float]:
    i, t0, _ = data.split(b":", 2)
    return int(i), float(t0)


class Tally:
    def __init__(self, n: int) -> None:
        self.n = n
        self.lat: dict[int, float] = {}
        self.dups = 0
        self.done = asyncio.Event()

    def got(self, data: bytes) -> None:
        i, t0 = _parse(data)
        if i in self.lat:
            self.dups += 1
            return
        self.lat[i] = time.monotonic() - t0
        if len(self.lat) >= self.n:
            self.done.set()


async def _go() -> None:
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)


async def _pace(n: int, rate: float, send: Any) -> None:
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


async def run_relaydesk(args: argparse.Namespace, tally: Tally) -> int:
    import relaydesk
    from relaydesk.client import Message, ReconnectPolicy
    from relaydesk.protocol.tokens import mint_token

    transport = "stream" if args.system == "relaydesk-stream" else "websocket"
    url = f"ws://{args.host}:{args.port}/v1/ws"

    def token(user: str) -> str:
        return mint_token("demo", args.secret, user, now=time.time(), ttl_s=3600)

    policy = ReconnectPolicy(base_s=0.1, max_s=2.0)
    common: dict[str, Any] = {"reconnect": policy, "transport": transport, "connect_timeout": 60}
    # Users of their own per cell: nothing of an earlier cell can arrive in this one.
    sub_user, pub_user = f"wns{args.tag}", f"wnp{args.tag}"
    sub = await relaydesk.connect(url, token(sub_user), device="s", **common)
    pub = await relaydesk.connect(url, token(pub_user), device="p", **common)

    async def consume() -> None:
        async for ev in sub.events():
            if isinstance(ev, Message) and ev.sender == pub_user:
                tally.got(ev.body)

    sends: list[asyncio.Future[Any]] = []

    async def send(i: int) -> None:
        # Not awaited here: the SDK keeps many publishes in flight, as an app would.
        sends.append(asyncio.ensure_future(pub.send(f"user:{sub_user}", _payload(i))))

    async with asyncio.TaskGroup() as tg:
        consumer = tg.create_task(consume())
        await _go()
        await _pace(args.n, args.rate, send)
        try:
            await asyncio.wait_for(tally.done.wait(), args.wait)
        except TimeoutError:
            pass
        consumer.cancel()
    await asyncio.wait(sends, timeout=5)
    reconnects = sub.statistics().connects - 1 + pub.statistics().connects - 1
    await pub.aclose()
    await sub.aclose()
    return reconnects


async def run_mosquitto(args: argparse.Namespace, tally: Tally) -> int:
    from bench.mqtt import open_mqtt

    topic = f"wn/{time.monotonic_ns()}"
    sub = await open_mqtt(args.host, args.port, f"wns{time.monotonic_ns()}", topic=topic,
                          on_publish=tally.got)  # fmt: skip
    pub = await open_mqtt(args.host, args.port, f"wnp{time.monotonic_ns()}")
    pub.set_topic(topic, PAYLOAD)

    async def send(i: int) -> None:
        pub.publish(_payload(i))

    await _go()
    await _pace(args.n, args.rate, send)
    try:
        await asyncio.wait_for(tally.done.wait(), args.wait)
    except TimeoutError:
        pass
    lost_links = int(sub.closed.done()) + int(pub.closed.done())
    sub.close()
    pub.close()
    return lost_links


async def run_ws(args: argparse.Namespace, tally: Tally) -> int:
    import websockets

    base = f"ws://{args.host}:{args.port}"
    async with (
        websockets.connect(base + "/sub", compression=None, ping_interval=None) as sub,
        websockets.connect(base + "/pub", compression=None, ping_interval=None) as pub,
    ):

        async def consume() -> None:
            async for data in sub:
                tally.got(data if isinstance(data, bytes) else data.encode())

        async def send(i: int) -> None:
            await pub.send(_payload(i))

        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(consume())
            await _go()
            await _pace(args.n, args.rate, send)
            try:
                await asyncio.wait_for(tally.done.wait(), args.wait)
            except TimeoutError:
                pass
            consumer.cancel()
    return 0


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally(args.n)
    runner = {
        "relaydesk-ws": run_relaydesk,
        "relaydesk-stream": run_relaydesk,
        "mosquitto": run_mosquitto,
        "ws": run_ws,
    }[args.system]
    reconnects = await runner(args, tally)
    lat = sorted(tally.lat.values())

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None

    return {
        "n": args.n,
        "delivered": len(lat),
        "lost": args.n - len(lat),
        "duplicates": tally.dups,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "reconnects": reconnects,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("--secret", default="")
    parser.add_argument("--tag", default="0", help="makes this run's user names unique")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
