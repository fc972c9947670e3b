"""What one idle logged-in connection holds, by module: a tracemalloc breakdown.

    python -m bench.conn_memory [--connections 2000] [--ws-engine native|asgi]

Runs a demo node in this process (the listener of ``relaydesk serve``, with
tracemalloc on), connects N logged-in, joined, idle clients with bench/loadgen.py's
generator processes, and compares Python heap snapshots before and after: bytes per
connection grouped by the source file that allocated them (websockets' protocol
object, the gateway's Connection, the session, telemetry, asyncio...).  The process
RSS growth per connection is printed beside it; the difference is native memory
(uvloop handles and their buffers, allocator overhead), which tracemalloc does not see.
Figures go to docs/benchmarks.md ("Memory per idle connection").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from bench import servers
from bench.loadgen import Fleet, Target
from relaydesk.config import load_settings
from relaydesk.server.app import RelaydeskServer
from relaydesk.server.listener import listener_config
from relaydesk.server.storage_setup import DEMO_SECRET

PORT = 9150


def _group(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("relaydesk", "websockets", "uvicorn", "asyncio", "msgspec"):
        if anchor in parts:
            i = parts.index(anchor)
            return "/".join(parts[i : i + 3 if anchor == "relaydesk" else i + 2])
    return parts[-1] if parts else filename


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--ws-engine", choices=("native", "asgi"), default="native")
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="connmem")
    settings = load_settings(
        None,
        {
            "server": {"port": args.port, "data_dir": data},
            "demo": True,
            "gateway": {"ws_engine": args.ws_engine, "heartbeat_timeout_ms": 600_000},
        },
        environ={},
    )
    node = RelaydeskServer(settings)
    server = uvicorn.Server(listener_config(node, settings, log_level="warning"))
    result: dict[str, Any] = {}

    def drive() -> None:
        while not server.started:
            time.sleep(0.1)
        time.sleep(1.0)
        import os

        pid = os.getpid()
        before = tracemalloc.take_snapshot()
        rss0 = servers.rss_kib(pid)
        target = Target("relaydesk", "127.0.0.1", args.port, channel="bench", prefix="m",
                        secret=DEMO_SECRET, group=100)  # fmt: skip
        fleet = Fleet(target, args.connections, procs=2, publisher=False)
        try:
            fleet.start(timeout=300)
            time.sleep(2.0)
            after = tracemalloc.take_snapshot()
            rss1 = servers.rss_kib(pid)
        finally:
            fleet.close()
        n = args.connections
        groups: dict[str, int] = {}
        for stat in after.compare_to(before, "filename"):
            key = _group(stat.traceback[0].filename)
            groups[key] = groups.get(key, 0) + stat.size_diff
        top = sorted(groups.items(), key=lambda kv: -kv[1])[:14]
        result.update(
            connections=n,
            ws_engine=args.ws_engine,
            rss_kib_per_connection=round((rss1 - rss0) / n, 2),
            python_heap_bytes_per_connection=round(sum(groups.values()) / n),
            by_module_bytes_per_connection={k: round(v / n) for k, v in top},
        )
        server.should_exit = True

    tracemalloc.start(1)
    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    uvloop.run(server.serve())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
