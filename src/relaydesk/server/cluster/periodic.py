"""One owned background task that runs a step at a fixed interval (STYLE rule 4).

A failed step is logged and the next one runs on time: a database hiccup must not end a
heartbeat or a controller for good.  ``start`` is idempotent (a node may be elected
leader again while its task runs) and ``aclose`` cancels and awaits the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("relaydesk.cluster")


class Periodic:
    """Runs ``step`` every ``interval_s`` seconds in one task named ``name``."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], Awaitable[Any]]) -> None:
        self.name = name
        self.interval_s = interval_s
        self._step = step
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._step()
            except Exception:
                log.exception("%s failed; next run in %.1f s", self.name, self.interval_s)
