"""A process that takes a lock and then waits to be killed (tests/client/test_locks_e2e.py).

Usage: python lock_holder.py WS_URL TOKEN CHANNEL LOCK; prints "held" once it holds it.
"""

from __future__ import annotations

import asyncio
import sys

import relaydesk


async def main(url: str, token: str, channel: str, lock: str) -> None:
    async with relaydesk.connect(url, token, device="holder") as client:
        await client.join(channel)
        assert await client.acquire_lock(channel, lock)
        print("held", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
