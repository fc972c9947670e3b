"""What nodes tell each other over the cluster bus (docs/operations.md).

A node that commits a batch publishes one ``CommitRecord`` per app of the batch: the
contiguous range of that app's positions the batch took (positions are per app,
docs/protocol.md §4) and, when it fits in one bus message, the events themselves
with their audience.  A record whose ``items`` is ``None`` only
announces the range; receivers read those events from storage.

``PresenceRecord`` carries how many devices of which users are connected to the
sending node: changes as they happen, and the node's full list periodically and when
a node asks for it with ``PresenceQuery`` (at start-up).  The periodic full list is
also the node's heartbeat: a node not heard from for a few periods is taken as gone.

``DeviceClaim`` says a device just logged in on the sending node: a node holding an
older live connection of that device closes it with DEVICE_REPLACED, so the newest
login wins across the cluster too (docs/protocol.md §3.5).

Messages are MessagePack arrays tagged by their first element.
"""

from __future__ import annotations

import msgspec

from relaydesk.protocol.frames import Event


class Item(msgspec.Struct, frozen=True, array_like=True):
    """One committed event and whom it is for (``audience`` None: every member)."""

    app: str
    audience: str | None
    event: Event


class CommitRecord(msgspec.Struct, frozen=True, array_like=True, tag="a"):
    """Positions ``first..last`` (inclusive) of ``app`` committed by ``node``.

    Tagged ``a`` since positions became per app (the tag was ``c`` while they were
    global): a node of the older version drops these as malformed, and the other way
    round, rather than misreading them (a cluster upgrades all nodes together)."""

    node: str
    app: str
    first: int
    last: int
    items: tuple[Item, ...] | None = None  # None: read the range from storage

    def after(self, pos: int) -> CommitRecord:
        """This record without its positions up to ``pos`` (already fanned out)."""
        items = None if self.items is None else tuple(i for i in self.items if i.event.pos > pos)
        return CommitRecord(self.node, self.app, max(self.first, pos + 1), self.last, items)


class Online(msgspec.Struct, frozen=True, array_like=True):
    """``devices`` devices of ``user`` are connected to the sending node (0: none)."""

    app: str
    user: str
    devices: int
    since: int  # when the first of them connected, Unix ms (0 when devices == 0)


class PresenceRecord(msgspec.Struct, frozen=True, array_like=True, tag="p"):
    """Presence on ``node`` (started as ``epoch``): changes, or with ``full`` the whole
    list (``part`` of ``parts``: a long list spans several messages)."""

    node: str
    epoch: str
    entries: tuple[Online, ...] = ()
    full: bool = False
    part: int = 0
    parts: int = 1


class PresenceQuery(msgspec.Struct, frozen=True, array_like=True, tag="q"):
    """``node`` just started: every node, please send your full presence list."""

    node: str


class DeviceClaim(msgspec.Struct, frozen=True, array_like=True, tag="d"):
    """``device`` of ``user`` logged in on ``node`` at ``ts`` (Unix ms)."""

    node: str
    app: str
    user: str
    device: str
    ts: int


BusMessage = CommitRecord | PresenceRecord | PresenceQuery | DeviceClaim

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(BusMessage)


def encode_record(record: BusMessage) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> BusMessage:
    """Decode a bus message; raises ``msgspec.DecodeError`` or ``ValidationError``."""
    record: BusMessage = _decoder.decode(data)
    if isinstance(record, CommitRecord):
        if record.first < 1 or record.last < record.first:
            raise msgspec.ValidationError(f"bad position range {record.first}..{record.last}")
        if record.items is not None and any(i.app != record.app for i in record.items):
            raise msgspec.ValidationError(
                f"a record of app {record.app!r} with another app's event"
            )
    return record
