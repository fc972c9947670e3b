"""The explain endpoint's worker slots: busy and timeout answers, slots freed only when the
work really ends (so abandoned computations never pile up threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from relaydesk.desk.tickets.errors import DeskError
from relaydesk.web.desk_api import _ThreadSlots


async def test_busy_timeout_and_release() -> None:
    slots = _ThreadSlots(1)
    gate = threading.Event()
    started = threading.Event()

    def slow(arg: bytes) -> bytes:
        started.set()
        gate.wait(10)
        return arg

    first = asyncio.ensure_future(slots.run(slow, b"a", 0.2))
    with pytest.raises(DeskError) as err:
        await first
    assert err.value.code == "sla.timeout" and err.value.status == 503
    assert started.is_set()
    # the abandoned computation still holds the only slot
    with pytest.raises(DeskError) as err:
        await slots.run(lambda b: b, b"b", 0.2)
    assert err.value.code == "sla.busy" and err.value.status == 503
    gate.set()
    for _ in range(100):  # the slot comes back once the thread has finished
        try:
            assert await slots.run(lambda b: b + b"!", b"c", 1.0) == b"c!"
            break
        except DeskError:
            await asyncio.sleep(0.02)
    else:
        raise AssertionError("slot never released")


async def test_errors_from_the_worker_reach_the_caller() -> None:
    def boom(_arg: bytes) -> bytes:
        raise ValueError("bad")

    slots = _ThreadSlots(2)
    with pytest.raises(ValueError, match="bad"):
        await slots.run(boom, b"", 1.0)
    assert await slots.run(lambda b: b, b"ok", 1.0) == b"ok"  # the slot was released
