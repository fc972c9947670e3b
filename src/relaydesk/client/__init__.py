"""The relaydesk Python SDK (asyncio).

    async with relaydesk.connect(url, token, device="laptop") as client:
        receipt = await client.send("user:bob", "hello")
        async for event in client.events():
            ...

See ``connect`` for the options and docs/protocol.md for the guarantees.
"""

from relaydesk.client.client import Client, CursorStore, MemoryCursorStore, connect
from relaydesk.client.connlog import ConnectionLog, LogEntry
from relaydesk.client.events import (
    ChannelMembership,
    ClientClosed,
    ClientEvent,
    ConnectError,
    Deletion,
    History,
    Lock,
    LockEvent,
    MembershipChange,
    Message,
    Metadata,
    MetadataChange,
    MetadataItem,
    OnlineMember,
    Presence,
    PresenceEvent,
    ReadMarker,
    RelaydeskError,
    RequestError,
    RevisionConflict,
    SendError,
    SendReceipt,
    StateEvent,
)
from relaydesk.client.transport import Link, LinkClosed, TokenProvider, websocket_opener
from relaydesk.protocol.client_session import ConnectionState, ReconnectPolicy, SessionStats
from relaydesk.protocol.frames import MetaEntry as MetadataEntry

__all__ = [
    "ChannelMembership",
    "Client",
    "ClientClosed",
    "ClientEvent",
    "ConnectError",
    "ConnectionLog",
    "ConnectionState",
    "CursorStore",
    "Deletion",
    "History",
    "Link",
    "LinkClosed",
    "Lock",
    "LockEvent",
    "LogEntry",
    "MembershipChange",
    "MemoryCursorStore",
    "Message",
    "Metadata",
    "MetadataChange",
    "MetadataEntry",
    "MetadataItem",
    "OnlineMember",
    "Presence",
    "PresenceEvent",
    "ReadMarker",
    "ReconnectPolicy",
    "RelaydeskError",
    "RequestError",
    "RevisionConflict",
    "SendError",
    "SendReceipt",
    "SessionStats",
    "StateEvent",
    "TokenProvider",
    "connect",
    "websocket_opener",
]
