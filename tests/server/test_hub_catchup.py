"""The hub's catch-up reads (``Hub.catchup``): from recent events when they cover the
range, from storage otherwise, the same events either way; warm after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cluster_hubs import publish

from relaydesk.clock import SystemClock
from relaydesk.config import load_settings
from relaydesk.protocol.addresses import channel_conversation
from relaydesk.server.routing import hub as hub_module
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage.messages import PublishOp


async def test_catchup_from_memory_storage_and_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "RECENT_EVENTS_MAX", 40)
    settings = load_settings(None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, {})
    clock = SystemClock()
    db, store = open_messaging_storage(settings, clock)
    hub = Hub(db, store, settings, clock)
    await hub.start()
    try:
        await hub.ensure_channel(DEMO_APP, "room", ["alice", "bob"])
        for i in range(100):
            await publish(hub, "alice", "channel:room", f"m{i}", f"id{i}")
        last = hub.fanned_pos(DEMO_APP)
        floor = hub.recent.floor(DEMO_APP)
        assert len(hub.recent) == 40 and floor == last - 40
        stored = await hub.feed(DEMO_APP, "bob", floor, last, 500)
        page = await hub.catchup(DEMO_APP, "bob", floor, last, 500)
        assert [e for e, _ in page] == stored and hub.stats["catchup_reads"] == 1
        # Below the floor: storage, the same answer.
        old = await hub.catchup(DEMO_APP, "bob", 0, last, 500)
        assert [e for e, _ in old] == await hub.feed(DEMO_APP, "bob", 0, last, 500)
        assert hub.stats["catchup_storage_reads"] == 1
    finally:
        await hub.aclose()
    # A restarted hub holds the newest stored events at once.
    again = Hub(db, store, settings, clock)
    await again.start()
    try:
        assert again.recent.floor(DEMO_APP) == floor and again.recent.last(DEMO_APP) == last
        page = await again.catchup(DEMO_APP, "bob", floor, last, 500)
        assert [e for e, _ in page] == stored and again.stats["catchup_storage_reads"] == 0
    finally:
        await again.aclose()
        await db.aclose()


async def test_a_restart_warms_each_app_with_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions are per app, so the warm start reads each app's newest events (an
    equal share of the bound each) and keeps a floor per app."""
    monkeypatch.setattr(hub_module, "RECENT_EVENTS_MAX", 40)
    settings = load_settings(None, {"server": {"data_dir": str(tmp_path)}, "demo": True}, {})
    clock = SystemClock()
    db, store = open_messaging_storage(settings, clock)
    hub = Hub(db, store, settings, clock)
    await hub.start()
    apps = {"busy": 60, "quiet": 5}  # messages per app
    try:
        for app, n in apps.items():
            await hub.ensure_channel(app, "room", ["alice", "bob"])
            for i in range(n):
                op = PublishOp(
                    app, "alice", "d1", channel_conversation("room"), f"{app}{i}", b"x", "", 1
                )
                assert (await hub.apply(op)).error is None
    finally:
        await hub.aclose()
    again = Hub(db, store, settings, clock)
    await again.start()
    try:
        last = {app: again.fanned_pos(app) for app in apps}
        assert last == {"busy": 62, "quiet": 7}  # two joins, then the messages
        assert again.recent.floor("busy") == 62 - 20 and again.recent.floor("quiet") == 0
        for app in apps:
            floor = again.recent.floor(app)
            page = await again.catchup(app, "bob", floor, last[app], 500)
            assert [e for e, _ in page] == await again.feed(app, "bob", floor, last[app], 500)
        assert again.stats["catchup_storage_reads"] == 0
    finally:
        await again.aclose()
        await db.aclose()
