"""The next group commit runs in the writer thread while the previous one fans out.

Unit test of the hub on a real SQLite file: commits are made slow enough that
publishes queue behind them; the test records when each commit starts and when each
batch is offered to a connection, and checks that a commit started before the
previous batch's fan-out, that nothing is offered twice or out of order, and that
every publish is answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from test_cluster_hubs import Endpoint, in_order_once, publish, until

from relaydesk.clock import SystemClock
from relaydesk.config import load_settings
from relaydesk.server.routing.fanout import Run
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage import Tx

T = TypeVar("T")


class Recording(Endpoint):
    def __init__(self, user: str, log: list[tuple[str, int]]) -> None:
        super().__init__(user)
        self.log = log

    def offer_run(self, run: Run) -> None:
        self.log.append(("offered", run.last_pos))
        super().offer_run(run)


async def test_the_next_commit_starts_before_the_last_one_fans_out(tmp_path: Path) -> None:
    settings = load_settings(None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, {})
    db, store = open_messaging_storage(settings, SystemClock())
    hub = Hub(db, store, settings, SystemClock())
    await hub.start()
    log: list[tuple[str, int]] = []
    try:
        await hub.ensure_channel(DEMO_APP, "room", ["alice", "bob"])
        bob = Recording("bob", log)
        await hub.attach(bob)
        real_write = db.write

        async def write(fn: Callable[[Tx], T]) -> T:
            if getattr(fn, "func", None) == hub._commit:
                log.append(("commit", len(fn.keywords["ops"])))  # type: ignore[attr-defined]
                # A slow disk: publishes queue behind every commit (thread, not loop).
                await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.02)
            return await real_write(fn)

        db.write = write  # type: ignore[method-assign]
        sends = []
        for i in range(200):  # arriving over time, as from clients
            sends.append(
                asyncio.create_task(publish(hub, "alice", "channel:room", f"m{i}", f"id{i}"))
            )
            await asyncio.sleep(0.001)
        await asyncio.gather(*sends)
        await until(lambda: len(bob.bodies()) == 200)
        in_order_once(bob)
        assert bob.bodies() == [f"m{i}".encode() for i in range(200)]  # commit order
        kinds = [k for k, _ in log]
        assert kinds.count("commit") >= 3
        # Without overlap every commit is offered before the next starts; with it, a
        # commit is handed over while the one before it has not been offered yet.
        assert any(a == b == "commit" for a, b in itertools.pairwise(kinds)), kinds
    finally:
        await hub.aclose()
        await db.aclose()
