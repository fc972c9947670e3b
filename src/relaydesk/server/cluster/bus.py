"""The cluster bus: how a node's commits reach the other nodes' connections.

The bus carries ``CommitRecord`` bytes, on NATS one subject per app (positions are
per app, docs/protocol.md §4.2: ``relaydesk.<cluster>.commits.<app>``, so a node could
subscribe to the apps it serves only), and the nodes' presence and device claims on
``relaydesk.<cluster>.nodes``; a node subscribes to ``relaydesk.<cluster>.>``.  It is
at-most-once on purpose: the hub's ``Sequencer`` detects every missing range and
reads it from storage, so a lost message, a bus restart or a node that died between
commit and publish delays delivery by about ``cluster.gap_timeout_ms`` and loses
nothing.  So the bus needs no persistence of its own (core NATS, not JetStream).

``open_bus(url)`` picks the adapter from the URL scheme: ``nats://`` or ``tls://``
(NATS core pub/sub).  ``MemoryBus`` joins hubs of one process, for unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

log = logging.getLogger("relaydesk.cluster")

Handler = Callable[[bytes], None]


class BusError(Exception):
    """The bus refused a message or cannot be reached."""


class Bus(Protocol):
    """A broadcast channel among the nodes of one cluster."""

    max_payload: int

    async def start(self, handler: Handler) -> None:
        """Subscribe: ``handler`` gets every message published after this returns."""

    async def publish(self, data: bytes, app: str | None = None) -> None:
        """Send ``data`` to every node (this one included); may drop it.  ``app``: the
        app whose commit record ``data`` is (None: a message about the nodes)."""

    async def aclose(self) -> None: ...


class MemoryBroker:
    """The shared side of ``MemoryBus``: hubs of one process (unit tests)."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.dropping = False  # lose every message, as a failing bus would


class MemoryBus:
    """A bus within one process, through a ``MemoryBroker`` (unit tests only)."""

    def __init__(self, broker: MemoryBroker, max_payload: int = 1 << 20) -> None:
        self.broker = broker
        self.max_payload = max_payload
        self._handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        self.broker.handlers.append(handler)

    async def publish(self, data: bytes, app: str | None = None) -> None:
        if len(data) > self.max_payload:
            raise BusError(f"message of {len(data)} bytes exceeds {self.max_payload}")
        if self.broker.dropping:
            return
        loop = asyncio.get_running_loop()
        for handler in list(self.broker.handlers):
            loop.call_soon(handler, data)

    async def aclose(self) -> None:
        if self._handler in self.broker.handlers:
            self.broker.handlers.remove(self._handler)


def app_token(app: str) -> str:
    """``app`` as one NATS subject token: ``.`` separates tokens, so it becomes ``~``
    (not allowed in app ids, docs/protocol.md §2.1, so the mapping is one to one)."""
    return app.replace(".", "~")


class NatsBus:
    """NATS core pub/sub under ``relaydesk.<cluster>`` (see the module docstring)."""

    def __init__(self, url: str, cluster: str, node: str, connect_within_s: float = 10.0) -> None:
        self.url = url
        self.connect_within_s = connect_within_s
        self.prefix = f"relaydesk.{cluster}"
        self.subject = f"{self.prefix}.nodes"
        self.node = node
        self.max_payload = 1 << 20
        self._nc: NatsClient | None = None

    async def start(self, handler: Handler) -> None:
        async def on_msg(msg: Msg) -> None:
            handler(msg.data)

        async def on_error(exc: Exception) -> None:
            log.warning("cluster bus %s: %s", self.url, exc)

        async def on_reconnect() -> None:
            log.info("cluster bus reconnected to %s", self.url)

        try:
            # nats-py retries the first connection for ever too: bound it, so a node
            # whose bus is unreachable at start-up stops with a clear error.
            self._nc = await asyncio.wait_for(
                self._connect(on_error, on_reconnect), self.connect_within_s
            )
        except Exception as exc:  # nats raises several unrelated types here
            raise BusError(f"cannot reach the cluster bus at {self.url}: {exc!r}") from exc
        self.max_payload = self._nc.max_payload
        # A slow node drops messages past these bounds rather than stall the bus
        # (the sequencer reads the dropped ranges from storage).
        await self._nc.subscribe(
            f"{self.prefix}.>", cb=on_msg, pending_msgs_limit=100_000, pending_bytes_limit=256 << 20
        )
        await self._nc.flush()

    async def _connect(self, on_error: Any, on_reconnect: Any) -> NatsClient:
        return await nats.connect(
            self.url,
            name=f"relaydesk-{self.node}",
            max_reconnect_attempts=-1,  # keep trying once up; storage covers the gap
            reconnect_time_wait=0.5,
            connect_timeout=5,
            error_cb=on_error,
            reconnected_cb=on_reconnect,
        )

    async def publish(self, data: bytes, app: str | None = None) -> None:
        if self._nc is None:
            raise BusError("bus not started")
        if len(data) > self.max_payload:
            raise BusError(f"message of {len(data)} bytes exceeds {self.max_payload}")
        subject = self.subject if app is None else f"{self.prefix}.commits.{app_token(app)}"
        try:
            await self._nc.publish(subject, data)
        except Exception as exc:
            raise BusError(str(exc)) from exc

    async def aclose(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.drain()


def open_bus(url: str, cluster: str, node: str) -> Bus:
    """The bus adapter for ``url`` (``nats://host:port``)."""
    if url.startswith(("nats://", "tls://")):
        return NatsBus(url, cluster, node)
    raise BusError(f"unsupported cluster bus url {url!r}; expected nats://host:port")


__all__ = [
    "Bus",
    "BusError",
    "Handler",
    "MemoryBroker",
    "MemoryBus",
    "NatsBus",
    "app_token",
    "open_bus",
]
