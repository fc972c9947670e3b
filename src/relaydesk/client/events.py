"""What the SDK hands to applications: feed events, receipts, query results, errors.

Plain frozen value objects, independent of the wire structs in
``relaydesk.protocol.frames`` so that the wire can evolve without breaking
applications.  ``from_event`` maps one feed entry (docs/protocol.md §4.1) onto
the public type for its kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import Event, MetaItem, PresenceChange
from relaydesk.protocol.locks import decode_lock_change
from relaydesk.protocol.metadata import decode_change
from relaydesk.protocol.presence_state import decode_state_change


@dataclass(frozen=True, slots=True)
class Message:
    """A message in conversation ``conv`` with per-conversation sequence ``seq``."""

    conv: str
    seq: int
    pos: int  # position in the receiving user's feed (0 for history pages)
    sender: str
    device: str
    id: str  # the sender's client message id
    ts: int  # server commit time, Unix milliseconds
    body: bytes
    enc: str = ""  # "" for plain payloads; an E2EE scheme name otherwise

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class ReadMarker:
    """The user (on ``device``) has read ``conv`` up to ``seq``."""

    conv: str
    seq: int
    pos: int
    user: str
    device: str
    ts: int


@dataclass(frozen=True, slots=True)
class Deletion:
    """Message ``seq`` of ``conv`` was deleted by its ``sender``."""

    conv: str
    seq: int
    pos: int
    sender: str
    device: str
    ts: int


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """``user`` joined or left channel conversation ``conv``; ``actor`` made it happen."""

    conv: str
    pos: int
    kind: Literal["join", "leave"]
    user: str
    actor: str
    role: str
    ts: int


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """``user`` (sharing a channel with you) went online or offline."""

    user: str
    online: bool
    devices: int
    ts: int


@dataclass(frozen=True, slots=True)
class MetadataItem:
    """One metadata item: written at object revision ``rev`` by ``by`` at ``ts``."""

    key: str
    value: str
    rev: int
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """A whole metadata object at revision ``major`` (0: never written)."""

    scope: Literal["channel", "user"]
    target: str
    major: int
    items: dict[str, MetadataItem]


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """The metadata of ``scope``:``target`` changed to revision ``major`` (in feed order):
    ``items`` were written (``op`` set/update), ``removed`` keys were deleted."""

    scope: str
    target: str
    op: str
    major: int
    pos: int
    actor: str
    ts: int
    items: dict[str, MetadataItem]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LockEvent:
    """Lock ``name`` of channel conversation ``conv`` changed (in feed order).

    ``op``: set, removed, acquired, queued, dequeued, released, revoked, expired;
    ``holder`` holds it now ("" = free), ``waiters`` queue for it in order; ``by``
    made the change ("" for a TTL expiry or a backend)."""

    conv: str
    pos: int
    op: str
    name: str
    holder: str
    waiters: tuple[str, ...]
    ttl_s: int
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class Lock:
    """A lock of a channel as listed by ``Client.locks``."""

    name: str
    ttl_s: int
    holder: str
    since: int
    waiters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StateEvent:
    """``user``'s presence state in channel conversation ``conv`` is now ``state``
    (empty: cleared, also when the user went offline); in feed order."""

    conv: str
    pos: int
    user: str
    state: dict[str, str]
    ts: int


@dataclass(frozen=True, slots=True)
class OnlineMember:
    """A channel member online now (``who_now``), with their state there."""

    user: str
    devices: int
    since: int
    state: dict[str, str]


ClientEvent = (
    Message
    | ReadMarker
    | Deletion
    | MembershipChange
    | PresenceEvent
    | MetadataChange
    | LockEvent
    | StateEvent
)


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """The server committed the message durably as ``seq`` of ``conv`` (puback)."""

    id: str
    conv: str
    seq: int
    pos: int
    ts: int
    dup: bool = False  # the server had it already (a resend after a lost puback)


@dataclass(frozen=True, slots=True)
class History:
    """One page of a conversation's messages, ascending by ``seq``."""

    conv: str
    messages: list[Message]
    more: bool  # more messages exist beyond this page in the paging direction


@dataclass(frozen=True, slots=True)
class Presence:
    """Presence of one user: online on ``devices`` devices since ``since`` (Unix ms)."""

    user: str
    online: bool
    devices: int
    since: int


@dataclass(frozen=True, slots=True)
class ChannelMembership:
    """The result of ``join``: the channel's conversation id and your role."""

    channel: str
    conv: str
    role: str


class RelaydeskError(Exception):
    """Base of SDK errors; ``code`` is from the protocol's error table (§7)."""

    def __init__(self, code: int, message: str) -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = "ERROR"
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.message = message


class SendError(RelaydeskError):
    """The server refused a message for good (it left the outbox)."""


class RequestError(RelaydeskError):
    """A request (join, history, presence...) failed."""


class RevisionConflict(RequestError):
    """A metadata compare-and-set lost: ``revision`` is the current one (§5.11)."""

    def __init__(self, code: int, message: str, revision: int) -> None:
        super().__init__(code, message)
        self.revision = revision


class ConnectError(RelaydeskError):
    """The client could not log in (bad token, timeout, attempts exhausted)."""


class ClientClosed(RelaydeskError):
    """The client was closed while the call was pending."""

    def __init__(self, message: str = "client closed") -> None:
        super().__init__(int(ErrorCode.INTERNAL), message)


def message_from(event: Event) -> Message:
    return Message(
        conv=event.conv,
        seq=event.seq,
        pos=event.pos,
        sender=event.sender,
        device=event.dev,
        id=event.id,
        ts=event.ts,
        body=event.body,
        enc=event.enc,
    )


def metadata_item(item: MetaItem) -> MetadataItem:
    return MetadataItem(key=item.key, value=item.value, rev=item.rev, by=item.by, ts=item.ts)


def _metadata_change(event: Event) -> MetadataChange:
    try:
        body = decode_change(event.body)
    except msgspec.DecodeError:  # a server defect; surface what the event itself says
        return MetadataChange(
            "", event.subject, "", event.seq, event.pos, event.sender, event.ts, {}, ()
        )
    return MetadataChange(
        scope=body.scope,
        target=body.target,
        op=body.op,
        major=body.major,
        pos=event.pos,
        actor=event.sender,
        ts=event.ts,
        items={i.key: metadata_item(i) for i in body.items},
        removed=tuple(body.removed),
    )


def _lock_event(event: Event) -> LockEvent:
    try:
        change = decode_lock_change(event.body)
    except msgspec.DecodeError:  # a server defect; surface what the event itself says
        return LockEvent(event.conv, event.pos, "", event.subject, "", (), 0, "", event.ts)
    return LockEvent(
        conv=event.conv,
        pos=event.pos,
        op=change.op,
        name=change.name,
        holder=change.holder,
        waiters=tuple(change.waiters),
        ttl_s=change.ttl_s,
        by=change.by,
        ts=event.ts,
    )


def from_event(item: Event | PresenceChange) -> ClientEvent:
    """The public event for one feed item."""
    if isinstance(item, PresenceChange):
        return PresenceEvent(user=item.user, online=item.online, devices=item.devices, ts=item.ts)
    if item.kind == "msg":
        return message_from(item)
    if item.kind == "read":
        return ReadMarker(
            conv=item.conv,
            seq=item.seq,
            pos=item.pos,
            user=item.sender,
            device=item.dev,
            ts=item.ts,
        )
    if item.kind == "del":
        return Deletion(
            conv=item.conv,
            seq=item.seq,
            pos=item.pos,
            sender=item.sender,
            device=item.dev,
            ts=item.ts,
        )
    if item.kind == "meta":
        return _metadata_change(item)
    if item.kind == "lock":
        return _lock_event(item)
    if item.kind == "state":
        try:
            change = decode_state_change(item.body)
        except msgspec.DecodeError:  # a server defect; surface what the event itself says
            return StateEvent(item.conv, item.pos, item.subject, {}, item.ts)
        return StateEvent(item.conv, item.pos, change.user, dict(change.state), item.ts)
    return MembershipChange(
        conv=item.conv,
        pos=item.pos,
        kind="join" if item.kind == "join" else "leave",
        user=item.subject,
        actor=item.sender,
        role=item.role,
        ts=item.ts,
    )
