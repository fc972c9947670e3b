"""``--only weaknet``: delivery on a bad link, relaydesk (WebSocket and the HTTP-streaming
fallback) against Mosquitto QoS 1 and the plain WebSocket peer, in the same run.

The clients run in a network namespace (tests/netlab/netns.py) joined to the host by a
veth pair; nftables drops a random N % of the packets entering the namespace; each
server is reached through its own ``relaydesk.netsim`` proxy on the host side of the
veth, which adds the delay (half the RTT each way) and the bandwidth cap (both ways).
Each cell of the grid runs ``bench/weaknet_client.py`` once per system: 100 messages
of 100 bytes at 20/s from a publisher to a subscriber, both in the namespace.  Figures:
publish-to-delivery p50/p99, messages lost (0 is required of relaydesk), reconnects,
and bytes through the proxy per message (application bytes both ways, TCP/IP headers
and retransmissions not included), from ``go`` to the end.

The grid is kept small (a few minutes): the loss sweep at 50 ms RTT and 1 Mbit/s, the
10 % loss cell at 300 ms RTT, and the thin link (64 kbit/s) at 50 ms, with and without
loss.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import servers
from relaydesk.netsim import LinkProfile, open_netsim

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("relaydesk-ws", "relaydesk-stream", "mosquitto", "ws")
LABELS = {
    "relaydesk-ws": "relaydesk WS",
    "relaydesk-stream": "relaydesk stream",
    "mosquitto": "Mosquitto QoS1",
    "ws": "plain WS",
}
# (drop %, RTT ms, bandwidth bit/s)
GRID = (
    (0, 50, 1_000_000),
    (5, 50, 1_000_000),
    (10, 50, 1_000_000),
    (20, 50, 1_000_000),
    (10, 300, 1_000_000),
    (0, 50, 64_000),
    (10, 50, 64_000),
)
QUICK_GRID = ((0, 50, 1_000_000), (10, 50, 1_000_000), (10, 300, 64_000))


def _netns() -> Any:
    spec = importlib.util.spec_from_file_location("netlab_netns", ROOT / "tests/netlab/netns.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _cell(
    link: Any, proxies: dict[str, Any], system: str, n: int, rate: float, secret: str
) -> dict[str, Any]:
    proxy = proxies["relaydesk" if system.startswith("relaydesk") else system]
    host, port = proxy.listen_address
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", link.name, sys.executable, "-m", "bench.weaknet_client",
        "--system", system, "--host", host, "--port", str(port), "--n", str(n),
        "--rate", str(rate), "--secret", secret, "--tag", f"{os.getpid()}x{time.monotonic_ns()}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(150):
            line = await proc.stdout.readline()
            if line.strip() != b"ready":
                err = await proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"{system}: no ready ({line!r}): {err[-800:].decode()}")
            before = proxy.statistics()
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            out = await proc.stdout.readline()
            await proc.wait()
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"{system}: timed out") from None
    after = proxy.statistics()
    if not out.strip():
        err = await proc.stderr.read() if proc.stderr else b""
        raise RuntimeError(f"{system}: no result: {err[-800:].decode()}")
    result: dict[str, Any] = json.loads(out)
    wire = (after.bytes_upstream - before.bytes_upstream) + (
        after.bytes_downstream - before.bytes_downstream
    )
    result["bytes_per_msg"] = round(wire / max(1, n), 1)
    return result


async def _run(quick: bool) -> dict[str, Any]:
    netns = _netns()
    rd, ws, mq = servers.RelaydeskServer(), servers.WsBroadcastServer(), servers.MosquittoServer()
    cells: list[dict[str, Any]] = []
    link = netns.NetnsLink()
    try:
        for srv in (rd, ws, mq):
            await asyncio.to_thread(srv.start)
        link.open()
        proxies = {
            name: await open_netsim((link.host_ip, 0), ("127.0.0.1", srv.port))
            for name, srv in (("relaydesk", rd), ("ws", ws), ("mosquitto", mq))
        }
        n, rate = (60, 20.0) if quick else (100, 20.0)
        for drop, rtt, bw in QUICK_GRID if quick else GRID:
            link.drop_percent(drop)
            profile = LinkProfile(latency_ms=rtt / 2, bandwidth_bps=bw)
            for proxy in proxies.values():
                proxy.impair("upstream", profile)
                proxy.impair("downstream", profile)
            row: dict[str, Any] = {"drop_pct": drop, "rtt_ms": rtt, "bandwidth_bps": bw}
            for system in SYSTEMS:
                t0 = time.monotonic()
                try:
                    row[system] = await _cell(link, proxies, system, n, rate, rd.secret)
                except RuntimeError as exc:
                    row[system] = {"error": str(exc)[:600]}
                row[system]["elapsed_s"] = round(time.monotonic() - t0, 1)
                print(f"   {drop:>2}% {rtt:>3} ms {bw // 1000:>5} kbit/s {system}: "
                      f"{row[system]}", flush=True)  # fmt: skip
            row["dropped_packets"] = link.dropped_packets()
            cells.append(row)
        for proxy in proxies.values():
            await proxy.aclose()
    finally:
        link.close()
        for srv in (rd, ws, mq):
            srv.stop()
    lost = [
        f"{c['drop_pct']}%/{c['rtt_ms']}ms/{c['bandwidth_bps']}: {s} lost {c[s].get('lost')}"
        for c in cells
        for s in ("relaydesk-ws", "relaydesk-stream")
        if c[s].get("lost", 1) != 0
    ]
    return {"cells": cells, "relaydesk_lost": lost, "loadavg": list(os.getloadavg())}


def run(quick: bool) -> dict[str, Any]:
    """The weaknet step of ``bench.run`` (root, ``ip`` and ``nft`` needed)."""
    if os.geteuid() != 0:
        return {"error": "needs root for network namespaces and nftables"}
    load_before = list(os.getloadavg())
    result = asyncio.run(_run(quick))
    result["loadavg_before"] = load_before
    return result


def table(result: dict[str, Any]) -> str:
    """The Markdown table of docs/benchmarks.md."""
    head = (
        "| drop | RTT | bandwidth | system | p50 ms | p99 ms | lost | reconnects | bytes/msg |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for c in result["cells"]:
        bw = f"{c['bandwidth_bps'] // 1000} kbit/s"
        for s in SYSTEMS:
            r = c[s]
            if "error" in r:
                lines.append(f"| {c['drop_pct']} % | {c['rtt_ms']} ms | {bw} | {LABELS[s]} | "
                             f"error | | | | |")  # fmt: skip
                continue
            lines.append(
                f"| {c['drop_pct']} % | {c['rtt_ms']} ms | {bw} | {LABELS[s]} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['lost']} | {r['reconnects']} | {r['bytes_per_msg']} |"
            )
    return head + "\n".join(lines)


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(json.dumps(out, indent=1))
    if "cells" in out:
        print(table(out))
