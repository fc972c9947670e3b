"""Pin the SDK's public names (STYLE rule 11): changing them is a release decision."""

from __future__ import annotations

import relaydesk
import relaydesk.client


def test_top_level_exports() -> None:
    assert relaydesk.__all__ == ["Client", "__version__", "connect"]
    assert relaydesk.__version__ == "0.1.0"
    assert relaydesk.connect is relaydesk.client.connect
    assert relaydesk.Client is relaydesk.client.Client


def test_client_exports() -> None:
    assert sorted(relaydesk.client.__all__) == [
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
    for name in relaydesk.client.__all__:
        assert getattr(relaydesk.client, name) is not None


def test_states_are_the_documented_six() -> None:
    assert [s.name for s in relaydesk.client.ConnectionState] == [
        "CONNECTING",
        "CONNECTED",
        "SYNCED",
        "RECONNECTING",
        "CLOSED",
        "FAILED",
    ]
