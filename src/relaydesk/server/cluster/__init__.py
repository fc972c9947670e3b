"""Scale-out: several nodes on one database, commits announced over a bus."""

from relaydesk.server.cluster.bus import (
    Bus,
    BusError,
    MemoryBroker,
    MemoryBus,
    NatsBus,
    open_bus,
)
from relaydesk.server.cluster.records import CommitRecord, Item, decode_record, encode_record
from relaydesk.server.cluster.sequencer import Sequencer

__all__ = [
    "Bus",
    "BusError",
    "CommitRecord",
    "Item",
    "MemoryBroker",
    "MemoryBus",
    "NatsBus",
    "Sequencer",
    "decode_record",
    "encode_record",
    "open_bus",
]
