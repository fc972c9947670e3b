"""Time to drain a node: logged-in connections moved off by ``relaydesk node drain``.

Theory of operation
-------------------
One relaydesk node (SQLite, ``node_heartbeat_ms = 500``) and ``CLIENTS`` WebSocket
clients in ``PROCS`` generator processes, each logged in (``hello`` → ``welcome``) and
then idle.  The step drains the node through the operator API and measures:

* **empty**: from the drain request until the node's ``/readyz`` counts no connection;
* per client, from the drain request until its ``moved`` frame and its close (4061).

The node learns its drain flag on its next registry heartbeat (up to one interval),
then moves ``DRAIN_BATCH`` connections every ``DRAIN_TICK_S`` (server/gateway).  The
clients do not reconnect (a real SDK would go to the hinted node), so the figures are
the node's own pace.  There is no peer: no other system here has a drain to compare.

Run alone: ``python -m bench.run --only drain`` (about a minute).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
import urllib.request
from typing import Any

import websockets

from bench import servers
from relaydesk.protocol.tokens import mint_token

CLIENTS = 5000
PROCS = 2
OPERATOR = "bench-operator-key-0123456789abcdef"
_CTX = mp.get_context("spawn")


class DrainNode(servers.RelaydeskServer):
    def config_text(self) -> str:
        return (
            super().config_text()
            + f'[telemetry]\noperator_key = "{OPERATOR}"\n[cluster]\nnode_heartbeat_ms = 500\n'
        )


async def _clients(port: int, secret: str, first: int, count: int, conn: Any) -> None:
    url = f"ws://127.0.0.1:{port}/v1/ws"
    closed: list[tuple[float, int | None, bool]] = []

    async def one(i: int, ready: asyncio.Event, go: asyncio.Event) -> None:
        token = mint_token("demo", secret, f"d{i}", now=time.time(), ttl_s=3600)
        async with websockets.connect(
            url, subprotocols=["relaydesk.v1.json"], open_timeout=60, max_queue=None
        ) as ws:
            await ws.send(json.dumps({"t": "hello", "token": token, "device": f"dev{i}"}))
            while json.loads(await ws.recv())["t"] != "welcome":
                pass
            ready.set()
            moved = False
            try:
                async for raw in ws:
                    if json.loads(raw)["t"] == "moved":
                        moved = True
            except websockets.ConnectionClosed:
                pass
            closed.append((time.monotonic(), ws.close_code, moved))

    events = [(asyncio.Event(), asyncio.Event()) for _ in range(count)]
    tasks = []
    for k in range(count):
        tasks.append(asyncio.create_task(one(first + k, *events[k])))
        if k % 100 == 99:
            await asyncio.sleep(0.05)  # a login ramp, not a storm
    await asyncio.wait_for(asyncio.gather(*(e[0].wait() for e in events)), 300)
    conn.send(("ready", count))
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
    conn.send(("closed", closed))


def _generator(port: int, secret: str, first: int, count: int, conn: Any) -> None:
    asyncio.run(_clients(port, secret, first, count, conn))


def _connections(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
        return int(json.loads(resp.read())["connections"])


def run(quick: bool = False) -> dict[str, Any]:
    clients = 1000 if quick else CLIENTS
    with DrainNode() as node:
        pipes, procs = [], []
        per = clients // PROCS
        for p in range(PROCS):
            parent, child = _CTX.Pipe()
            proc = _CTX.Process(
                target=_generator, args=(node.port, node.secret, p * per, per, child)
            )
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        t_login = time.monotonic()
        for pipe in pipes:
            assert pipe.poll(400), "clients did not log in"
            assert pipe.recv()[0] == "ready"
        login_s = time.monotonic() - t_login
        before = _connections(node.port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{node.port}/v1/nodes/node-1/drain",
            data=b'{"reason": "bench"}',
            headers={"Authorization": f"Bearer {OPERATOR}", "Content-Type": "application/json"},
            method="POST",
        )
        t0 = time.monotonic()
        urllib.request.urlopen(request, timeout=10).read()
        while _connections(node.port) > 0 and time.monotonic() - t0 < 120:
            time.sleep(0.02)
        empty_s = time.monotonic() - t0
        closes: list[tuple[float, int | None, bool]] = []
        for pipe in pipes:
            assert pipe.poll(120), "clients did not finish"
            closes.extend(pipe.recv()[1])
        for proc in procs:
            proc.join(10)
    after = sorted((t - t0) * 1000.0 for t, _, _ in closes)
    pct = {
        f"p{p:g}": after[min(len(after) - 1, int(p / 100 * len(after)))] if after else None
        for p in (50, 99, 100)
    }
    return {
        "clients": clients,
        "connections_before": before,
        "login_all_s": round(login_s, 2),
        "empty_s": round(empty_s, 2),
        "close_after_drain_ms": {k: None if v is None else round(v, 1) for k, v in pct.items()},
        "closed_4061": sum(1 for _, code, _ in closes if code == 4061),
        "got_moved_frame": sum(1 for _, _, moved in closes if moved),
        "heartbeat_ms": 500,
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv[1:]), indent=2))
