"""The push queue on the commit path (server/features/push.py): a real hub on SQLite
whose push drain is not running, so its bounded queue fills."""

from __future__ import annotations

from pathlib import Path

from relaydesk.clock import SystemClock
from relaydesk.config import load_settings
from relaydesk.server.features.push import PushService
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage.push import PushConfig, put_config_tx


async def test_a_full_push_queue_drops_and_counts_without_delaying_commits(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None, {"server": {"data_dir": str(tmp_path)}, "demo": True, "push": {"queue_max": 2}}, {}
    )
    clock = SystemClock()
    db, store = open_messaging_storage(settings, clock)
    hub = Hub(db, store, settings, clock)
    push = PushService(hub, settings.push)
    hub.on_committed = push.offer
    await hub.start()
    try:
        config = PushConfig(DEMO_APP, "http://127.0.0.1:9/push", "s" * 16, False, 1000)
        await db.write(lambda tx: put_config_tx(tx, config, 0))
        await push.reload()  # configured, but the drain is not started: nothing takes
        events = [await hub.post(DEMO_APP, "alice", "user:bob", b"hi", f"m{i}") for i in range(5)]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]  # every publish committed
        assert push.stats["offered"] == 2 and push.stats["drops"] == 3
    finally:
        await hub.aclose()
        await push.aclose()
        await db.aclose()
