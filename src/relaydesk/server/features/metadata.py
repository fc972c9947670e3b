"""Metadata reads and writes for the gateway and the HTTP API (docs/protocol.md §5.11).

Writes are ``MetaOp`` operations of the hub's group commit: the database decides
compare-and-set races and the change event takes the next feed position.  Reads go
straight to the database (the committed state; no cache to go stale across nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

from relaydesk.clock import millis
from relaydesk.protocol.addresses import Conversation, channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event, MetaEntry, MetaItem
from relaydesk.server.routing.hub import Hub
from relaydesk.storage import Tx
from relaydesk.storage.metadata import MetaOp, read_object_tx


def change_conversation(scope: str, target: str) -> Conversation:
    """Where change events of ``scope``:``target`` go (§5.11)."""
    if scope == "channel":
        return channel_conversation(target)
    if scope == "user":
        return resolve(f"user:{target}", target)
    raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"unknown metadata scope {scope!r}")


class MetadataService:
    """Channel and user metadata of every app served by one hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def read(
        self, app: str, reader: str | None, scope: str, target: str
    ) -> tuple[int, list[MetaItem]]:
        """The object's revision and items; ``reader`` None is a backend (app secret).

        A channel's metadata is for its members; a user's for anyone of the app."""
        conv = change_conversation(scope, target)
        store = self.hub.store

        def run(tx: Tx) -> tuple[int, list[MetaItem]]:
            if reader is not None and scope == "channel":
                if not store.is_member_tx(tx, app, conv, reader):
                    raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {target!r}")
            major, items = read_object_tx(tx, app, scope, target)
            return major, list(items.values())

        return await self.hub.db.read(run)

    async def change(
        self,
        app: str,
        actor: str,
        scope: str,
        target: str,
        op: str,
        items: Sequence[MetaEntry],
        *,
        major: int = -1,
        lock: str = "",
        privileged: bool = False,
        device: str = "server",
    ) -> Event:
        """Commit a change; its ``meta`` event (``seq`` = the new revision) or raises."""
        outcome = await self.hub.apply(
            MetaOp(
                app=app,
                actor=actor,
                device=device,
                conv=change_conversation(scope, target),
                scope=scope,
                target=target,
                op=op,
                items=tuple(items),
                major=major,
                ts=millis(self.hub.clock),
                lock=lock,
                privileged=privileged,
            )
        )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.event is not None
        return outcome.event
