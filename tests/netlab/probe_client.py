"""Run inside a namespace: an SDK client that probes the gateway for a while, then exits.

usage: probe_client.py WS_URL TOKEN REGION SECONDS PROBE_TIMEOUT_S
"""

from __future__ import annotations

import asyncio
import sys

import relaydesk


async def main(url: str, token: str, region: str, seconds: float, timeout_s: float) -> None:
    async with relaydesk.connect(
        url,
        token,
        device=f"probe-{region}",
        region=region,
        net="veth",
        probe_interval_s=0.2,
        probe_timeout_s=timeout_s,
    ) as client:
        print("ready", flush=True)
        await asyncio.sleep(seconds)
        print(f"rtt {client.rtt}", flush=True)


if __name__ == "__main__":
    url, token, region, seconds, timeout_s = sys.argv[1:6]
    asyncio.run(main(url, token, region, float(seconds), float(timeout_s)))
