"""App users of one region, for the automatic-drain test: every send timed, per node.

``region_clients.py URL REGION STOP_FILE USERS_JSON`` connects one SDK client per entry
of ``USERS_JSON`` (``[user, device, token]``) to ``URL`` and, until ``STOP_FILE`` exists,
has each publish to ``channel:edge`` every 0.5 s (waiting at most ``SEND_TIMEOUT_S`` for
the acknowledgement; the SDK keeps an unacknowledged message and resends it), read its
feed and probe every second.  A drained node's ``moved`` sends the SDK to the hinted
node.  Prints ``ready`` once every client is in, then one JSON document: ``samples``,
per send ``[wall-clock start s, acked within the time-out, latency ms or null, node
URL]``, and ``logs``, each user's SDK connection log (what a failed check shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

import relaydesk
from relaydesk.client import Client, ReconnectPolicy

FAST = ReconnectPolicy(base_s=0.1, max_s=1.0)
SEND_TIMEOUT_S = 3.0


async def _user(
    url: str, region: str, stop: Path, user: str, device: str, token: str,
    samples: list[list[Any]], ready: asyncio.Event, started: list[int], total: int,
    logs: dict[str, Any],
) -> None:  # fmt: skip
    async with relaydesk.connect(
        url, token, device=device, region=region, net="wifi", probe_interval_s=1.0,
        probe_timeout_s=2.0, reconnect=FAST, connect_timeout=30.0,
    ) as client:  # fmt: skip

        async def read(c: Client) -> None:
            async for _ in c.events():
                pass

        reader = asyncio.create_task(read(client))
        started.append(1)
        if len(started) == total:
            ready.set()
        await ready.wait()
        i = 0
        while not stop.exists():
            i += 1
            t0 = time.time()
            m0 = time.monotonic()
            node = client.node_url
            try:
                await asyncio.wait_for(client.send("channel:edge", f"{device} {i}"), SEND_TIMEOUT_S)
                samples.append([t0, True, round((time.monotonic() - m0) * 1000, 2), node])
            except TimeoutError:
                samples.append([t0, False, None, node])
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - m0)))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        logs[user] = [msgspec.to_builtins(e) for e in client.connection_log]


async def run(url: str, region: str, stop: Path, users: list[Any]) -> dict[str, Any]:
    samples: list[list[Any]] = []
    logs: dict[str, Any] = {}
    ready = asyncio.Event()
    started: list[int] = []

    async def announce() -> None:
        await ready.wait()
        print("ready", flush=True)

    await asyncio.gather(
        announce(),
        *(
            _user(url, region, stop, u, d, t, samples, ready, started, len(users), logs)
            for u, d, t in users
        ),
    )
    return {"samples": samples, "logs": logs}


def main() -> None:
    url, region, stop, users = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    out = asyncio.run(run(url, region, stop, json.loads(users)))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
