"""A commit reported as failed that landed all the same is still delivered live.

On PostgreSQL the connection can break while ``COMMIT`` runs: the hub sees an error,
answers ``INTERNAL`` (the SDK retries with the same id and gets ``dup``), but the rows
are stored.  Without a resync the next commit moves ``fanned_pos`` past them and live
connections never see them (their cursor moves on: lost to them).  Unit test of the
hub on a real SQLite file; the failure is injected after the real commit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from test_cluster_hubs import Endpoint, publish, until

from relaydesk.clock import SystemClock
from relaydesk.config import load_settings
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage import Tx

T = TypeVar("T")


async def test_a_landed_commit_reported_failed_is_routed(tmp_path: Path) -> None:
    settings = load_settings(None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, {})
    clock = SystemClock()
    db, store = open_messaging_storage(settings, clock)
    hub = Hub(db, store, settings, clock)
    await hub.start()
    try:
        await hub.ensure_channel(DEMO_APP, "room", ["alice", "bob"])
        bob = Endpoint("bob")
        await hub.attach(bob)
        real_write = db.write
        broken = {"left": 1}

        async def write(fn: Callable[[Tx], T]) -> T:
            result = await real_write(fn)
            if broken["left"] and getattr(fn, "func", None) == hub._commit:
                broken["left"] -= 1
                raise OSError("server closed the connection unexpectedly")
            return result

        db.write = write  # type: ignore[method-assign]
        outcome = await hub.apply(_op(hub, "lost?", "m1"))
        assert outcome.error is not None and outcome.error.code == 4500
        # The stored message reaches bob anyway, once, and the SDK's retry is a dup.
        await until(lambda: bob.bodies() == [b"lost?"])
        assert hub.stats["resynced_events"] == 1
        retry = await hub.apply(_op(hub, "lost?", "m1"))
        assert retry.duplicate
        await publish(hub, "alice", "channel:room", "next", "m2")
        await until(lambda: bob.bodies() == [b"lost?", b"next"])
        assert [e.pos for e in bob.events] == sorted({e.pos for e in bob.events})
    finally:
        await hub.aclose()
        await db.aclose()


def _op(hub: Hub, body: str, msg_id: str) -> Any:
    from relaydesk.clock import millis
    from relaydesk.protocol.addresses import resolve
    from relaydesk.storage.messages import PublishOp

    return PublishOp(
        app=DEMO_APP,
        sender="alice",
        device="d1",
        conv=resolve("channel:room", "alice"),
        client_id=msg_id,
        body=body.encode(),
        enc="",
        ts=millis(hub.clock),
    )
