"""What nodes tell each other over the cluster bus (docs/protocol.md §4.5).

A node that commits a batch publishes one ``CommitRecord``: the contiguous range of
global positions the batch took and, when it fits in one bus message, the events
themselves with their app and audience.  A record whose ``items`` is ``None`` only
announces the range; receivers read those events from storage.  Records are
MessagePack, encoded once per commit.
"""

from __future__ import annotations

import msgspec

from relaydesk.protocol.frames import Event


class Item(msgspec.Struct, frozen=True, array_like=True):
    """One committed event and whom it is for (``audience`` None: every member)."""

    app: str
    audience: str | None
    event: Event


class CommitRecord(msgspec.Struct, frozen=True, array_like=True):
    """Positions ``first..last`` (inclusive) committed by ``node``."""

    node: str
    first: int
    last: int
    items: tuple[Item, ...] | None = None  # None: read the range from storage

    def after(self, pos: int) -> CommitRecord:
        """This record without its positions up to ``pos`` (already fanned out)."""
        items = None if self.items is None else tuple(i for i in self.items if i.event.pos > pos)
        return CommitRecord(self.node, max(self.first, pos + 1), self.last, items)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CommitRecord)


def encode_record(record: CommitRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> CommitRecord:
    """Decode a bus message; raises ``msgspec.DecodeError`` or ``ValidationError``."""
    record = _decoder.decode(data)
    if record.first < 1 or record.last < record.first:
        raise msgspec.ValidationError(f"bad position range {record.first}..{record.last}")
    return record
