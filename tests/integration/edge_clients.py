"""App users of one edge node, for the cluster diagnosis test (scenario 3).

``edge_clients.py URL REGION SECONDS USERS_JSON`` connects one SDK client per entry of
``USERS_JSON`` (a JSON list of ``[user, device, token]``) to ``URL`` and, for
``SECONDS``, has each one publish to ``channel:edge`` every 0.5 s, read (and so
acknowledge) its feed, and send a network-quality probe every second, as a real app
with the SDK's probes switched on does.  The test runs it inside a network namespace
so that its packets cross the impaired path; it can also run in the test's own
process (``run``).  Prints one JSON line of counts at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import relaydesk
from relaydesk.client import Client, Message, ReconnectPolicy

FAST = ReconnectPolicy(base_s=0.1, max_s=1.0)


async def _user(
    url: str, region: str, seconds: float, user: str, device: str, token: str, out: dict[str, int]
) -> None:
    deadline = time.monotonic() + seconds
    async with relaydesk.connect(
        url,
        token,
        device=device,
        region=region,
        net="wifi",
        probe_interval_s=1.0,
        probe_timeout_s=2.0,
        reconnect=FAST,
        connect_timeout=seconds,
    ) as client:

        async def read(c: Client) -> None:
            async for event in c.events():
                if isinstance(event, Message):
                    out["received"] += 1

        reader = asyncio.create_task(read(client))
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                await asyncio.wait_for(client.send("channel:edge", f"{device} {i}"), 3.0)
                out["acked"] += 1
            except TimeoutError:
                out["send_timeouts"] += 1  # the SDK keeps it in its outbox and retries
            await asyncio.sleep(0.5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def run(url: str, region: str, seconds: float, users: list[Any]) -> dict[str, int]:
    out = {"acked": 0, "send_timeouts": 0, "received": 0}
    await asyncio.gather(
        *(_user(url, region, seconds, user, device, token, out) for user, device, token in users)
    )
    return out


def main() -> None:
    url, region, seconds, users = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    print("ready", flush=True)
    counts = asyncio.run(run(url, region, seconds, json.loads(users)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
