"""Channel and user metadata: the rules of one change, sans I/O (docs/protocol.md §5.11).

Theory of operation
-------------------
A metadata *object* belongs to a channel (``channel:<name>``) or a user
(``user:<name>``).  It holds at most ``MAX_ITEMS`` items (key, value, rev, by, ts)
and one whole-object revision, ``major``: 0 for an object never written, and every
applied change raises it by one.  An item's ``rev`` is the ``major`` of the change
that last wrote it, so one number orders all of an object's history.

``apply_change`` is the whole rule set: given the object as stored and a requested
change it returns the new object and what changed, or raises ``ProtocolError``
(REVISION_CONFLICT with the current revision, NOT_FOUND, METADATA_TOO_LARGE).  It
reads no clock and no database: the store calls it inside the group commit, where
the database serialises writers (on PostgreSQL the position counter's row lock is
held cluster-wide), so of N writers that present the same revision exactly one
wins, on one node or many.

A change that is applied becomes one ``meta`` event in the feed (kind ``meta``,
``seq`` = the new ``major``, ``subject`` = the target, body = ``ChangeBody`` as
JSON), in position order with every other event, so a device that resumes from its
cursor replays the same changes a live one saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import MetaEntry, MetaItem

# Items per object: a whole object (128 x (8 KiB + key)) stays near 1 MiB, the
# largest reply the gateway sends (a history page's bound).
MAX_ITEMS = 128
# A value's UTF-8 bytes (Agora's documented per-value limit is 8 KB too).
MAX_VALUE_BYTES = 8192
# Items per request: the frame schema's bound (``MetaSet.items``).
MAX_ITEMS_PER_CHANGE = 128

_JSON = msgspec.json.Encoder()


class ChangeBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a ``meta`` event (JSON): what one change did."""

    scope: str
    target: str
    op: str
    major: int
    items: list[MetaItem] = []  # written items, as stored now
    removed: list[str] = []  # keys removed


_CHANGE_DECODER = msgspec.json.Decoder(ChangeBody)


def encode_change(body: ChangeBody) -> bytes:
    return _JSON.encode(body)


def decode_change(data: bytes) -> ChangeBody:
    """The change a ``meta`` event carries; raises ``msgspec.DecodeError`` if malformed."""
    return _CHANGE_DECODER.decode(data)


@dataclass(frozen=True, slots=True)
class Change:
    """A requested change (from a ``meta_set`` frame or the HTTP API)."""

    op: str  # "set" | "update" | "remove"
    items: Sequence[MetaEntry]
    major: int = -1


@dataclass(frozen=True, slots=True)
class Applied:
    major: int
    written: list[MetaItem]
    removed: list[str]


def apply_change(
    major: int, items: Mapping[str, MetaItem], change: Change, actor: str, now_ms: int
) -> Applied:
    """Apply ``change`` by ``actor`` at ``now_ms`` to the object (``major``, ``items``).

    All or nothing: any failing check raises before anything is decided.
    """
    if change.op not in ("set", "update", "remove"):
        raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"unknown metadata op {change.op!r}")
    if len(change.items) > MAX_ITEMS_PER_CHANGE:
        raise ProtocolError(
            ErrorCode.METADATA_TOO_LARGE,
            f"{len(change.items)} items in one change; the limit is {MAX_ITEMS_PER_CHANGE}",
        )
    if change.major >= 0 and change.major != major:
        raise ProtocolError(
            ErrorCode.REVISION_CONFLICT,
            f"the object is at revision {major}, not {change.major}",
            rev=major,
        )
    seen: set[str] = set()
    for entry in change.items:
        if entry.key in seen:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"key {entry.key!r} given twice")
        seen.add(entry.key)
        current = items.get(entry.key)
        if entry.rev >= 0:
            have = current.rev if current is not None else 0
            if entry.rev != have:
                raise ProtocolError(
                    ErrorCode.REVISION_CONFLICT,
                    f"item {entry.key!r} is at revision {have}, not {entry.rev}",
                    rev=have,
                )
        if change.op == "update" and current is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no item {entry.key!r} to update")
        if change.op != "remove":
            size = len(entry.value.encode("utf-8", "surrogatepass"))
            if size > MAX_VALUE_BYTES:
                raise ProtocolError(
                    ErrorCode.METADATA_TOO_LARGE,
                    f"value of {entry.key!r} is {size} bytes; the limit is {MAX_VALUE_BYTES}",
                )
    new_major = major + 1
    if change.op == "remove":
        keys = [e.key for e in change.items] if change.items else sorted(items)
        return Applied(new_major, [], [k for k in keys if k in items])
    added = sum(1 for e in change.items if e.key not in items)
    if len(items) + added > MAX_ITEMS:
        raise ProtocolError(
            ErrorCode.METADATA_TOO_LARGE,
            f"{len(items) + added} items; an object holds at most {MAX_ITEMS}",
        )
    written = [
        MetaItem(key=e.key, value=e.value, rev=new_major, by=actor, ts=now_ms) for e in change.items
    ]
    return Applied(new_major, written, [])
