"""Scale-out: several nodes on one database, commits announced over a bus."""

from relaydesk.server.cluster.bus import (
    Bus,
    BusError,
    MemoryBroker,
    MemoryBus,
    NatsBus,
    open_bus,
)
from relaydesk.server.cluster.presence import RemotePresence
from relaydesk.server.cluster.records import (
    BusMessage,
    CommitRecord,
    DeviceClaim,
    Item,
    Online,
    PresenceQuery,
    PresenceRecord,
    decode_record,
    encode_record,
)
from relaydesk.server.cluster.sequencer import Sequencer

__all__ = [
    "Bus",
    "BusError",
    "BusMessage",
    "CommitRecord",
    "DeviceClaim",
    "Item",
    "MemoryBroker",
    "MemoryBus",
    "NatsBus",
    "Online",
    "PresenceQuery",
    "PresenceRecord",
    "RemotePresence",
    "Sequencer",
    "decode_record",
    "encode_record",
    "open_bus",
]
