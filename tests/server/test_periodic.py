"""The periodic task behind the node registry's heartbeat and the automatic drain."""

from __future__ import annotations

import asyncio

from relaydesk.server.cluster.periodic import Periodic


async def test_a_failing_step_does_not_stop_the_task_and_start_is_idempotent() -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("a database hiccup")

    ticker = Periodic("test", 0.005, step)
    ticker.start()
    ticker.start()  # elected again while running: still one task
    assert len([t for t in asyncio.all_tasks() if t.get_name() == "test"]) == 1
    for _ in range(400):
        if len(calls) >= 4:
            break
        await asyncio.sleep(0.005)
    assert len(calls) >= 4  # it ran on after the failure
    await ticker.aclose()
    assert not ticker.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "test"]
    seen = len(calls)
    await asyncio.sleep(0.03)
    assert len(calls) == seen  # nothing runs after aclose
    await ticker.aclose()  # idempotent
