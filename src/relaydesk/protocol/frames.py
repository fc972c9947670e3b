"""Wire frames of relaydesk protocol v1 (docs/protocol.md §3-§6).

Every WebSocket message carries exactly one frame.  A frame is a map whose ``t``
field names its type; the same structs serve the JSON and the MessagePack codecs.
Frames are frozen: handlers never mutate what came off the wire.

``Event`` is not a frame: it is one entry of a user's feed (a message, a read
marker, a deletion, a membership change), carried in ``msgs`` and ``history``
frames.  The server encodes each event once per codec and splices the bytes into
per-connection batches (see ``codec.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

PROTOCOL_VERSION = 1
SUBPROTOCOL_JSON = "relaydesk.v1.json"
SUBPROTOCOL_MSGPACK = "relaydesk.v1.msgpack"
SUBPROTOCOLS = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)

# Identifiers: no ':' so that "dm:<a>:<b>" parses unambiguously (protocol.md §2).
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
ClientMsgId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Address = Annotated[str, Meta(min_length=3, max_length=140)]
Rid = Annotated[int, Meta(ge=0, le=2**53)]
Pos = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Millis = Annotated[int, Meta(ge=0, le=2**53)]
Label = Annotated[str, Meta(max_length=64)]
Token = Annotated[str, Meta(min_length=1, max_length=4096)]
Role = Literal["owner", "member"]
EventKind = Literal["msg", "read", "del", "join", "leave", "meta", "lock", "state"]
MetaScope = Literal["channel", "user"]
MetaOpName = Literal["set", "update", "remove"]
# Metadata keys: printable, no control characters (docs/protocol.md §5.11).
MetaKey = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
# A value's UTF-8 size is checked against its limit when applied (METADATA_TOO_LARGE,
# an error only); the schema bound only keeps absurd strings out of the decoder.
MetaValue = Annotated[str, Meta(max_length=65536)]
Revision = Annotated[int, Meta(ge=-1, le=2**53)]


class Frame(msgspec.Struct, frozen=True, tag_field="t", omit_defaults=True):
    """Base of every frame; ``t`` is the tag."""


# --------------------------------------------------------------------------- feed


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of a conversation, in a user's feed.

    ``pos`` is the global feed position (the resume cursor counts these);
    ``seq`` is the per-conversation sequence for ``msg`` (for ``read`` the
    sequence read up to, for ``del`` the sequence deleted, 0 otherwise).
    """

    conv: str
    pos: int
    seq: int
    kind: EventKind
    sender: str = msgspec.field(name="from")
    dev: str = ""
    id: str = ""
    ts: int = 0
    body: bytes = b""
    enc: str = ""
    subject: str = ""
    role: str = ""


# ------------------------------------------------------------- client -> server


class Hello(Frame, frozen=True, tag="hello"):
    """Login.  First frame of every connection.  ``cursor`` resumes the feed."""

    token: Token
    device: Name
    cursor: Pos | None = None
    sdk: Label = ""
    region: Label = ""
    net: Label = ""
    # The heartbeat interval the client asks for, in ms (§6.2); the server clamps it
    # to its bounds and answers the agreed interval in ``welcome.heartbeat_ms``.
    hb: Annotated[int, Meta(ge=0, le=3_600_000)] | None = None


class Ping(Frame, frozen=True, tag="ping"):
    ts: Millis


class Publish(Frame, frozen=True, tag="pub"):
    """Send ``body`` to ``to`` (user:U, channel:C, dm:A:B or ch:C)."""

    id: ClientMsgId
    to: Address
    body: bytes
    enc: Label = ""


class Ack(Frame, frozen=True, tag="ack"):
    """Cumulative: the device has processed its feed up to ``pos``."""

    pos: Pos


class Read(Frame, frozen=True, tag="read"):
    conv: Address
    seq: Pos


class Delete(Frame, frozen=True, tag="del"):
    rid: Rid
    conv: Address
    seq: Pos


class Join(Frame, frozen=True, tag="join"):
    rid: Rid
    channel: Name


class Leave(Frame, frozen=True, tag="leave"):
    rid: Rid
    channel: Name


class Invite(Frame, frozen=True, tag="invite"):
    rid: Rid
    channel: Name
    user: Name
    role: Role = "member"


class HistoryQuery(Frame, frozen=True, tag="history_q"):
    """Page a conversation: ``before`` / ``after`` are exclusive sequences."""

    rid: Rid
    conv: Address
    before: Pos | None = None
    after: Pos | None = None
    limit: Annotated[int, Meta(ge=1, le=500)] = 50


class PresenceQuery(Frame, frozen=True, tag="presence_q"):
    rid: Rid
    users: Annotated[list[Name], Meta(min_length=1, max_length=500)]


class Refresh(Frame, frozen=True, tag="auth"):
    """Replace the session token before it expires."""

    rid: Rid
    token: Token


# Probe labels are cut to the telemetry label limit server-side (and counted);
# only absurd lengths fail the frame.
ProbeLabel = Annotated[str, Meta(max_length=256)]


class Probe(Frame, frozen=True, tag="probe"):
    """A network-quality report measured by the client (docs/telemetry.md §probes).

    Numbers are deliberately unconstrained on the wire: absurd values (negative
    RTT, loss over 1, a timestamp far in the future) are rejected or clamped by
    the server's telemetry and counted there, rather than closing the connection.
    ``ts`` is the client's wall clock (ms) when the measurement ended; 0 = now.
    """

    rtt_p50_ms: float
    rtt_p95_ms: float
    loss: float  # fraction of probe round trips lost, 0..1
    samples: int
    jitter_ms: float = 0.0
    net: ProbeLabel = ""
    sdk: ProbeLabel = ""
    region: ProbeLabel = ""
    ts: int = 0


# ------------------------------------------------------------ metadata (§5.11)


class MetaEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One item of a metadata write: ``rev`` -1 = no check, 0 = must not exist,
    N = must still be at revision N (compare-and-set)."""

    key: MetaKey
    value: MetaValue = ""
    rev: Revision = -1


class MetaSet(Frame, frozen=True, tag="meta_set"):
    """Change the metadata of ``channel:<target>`` or ``user:<target>``.

    ``op``: ``set`` adds or overwrites items, ``update`` overwrites existing items
    only, ``remove`` deletes the items named (all items when ``items`` is empty).
    ``major`` -1 = no check; otherwise the object's revision must still be ``major``.
    ``lock``: if given, the writer must hold that lock of the channel (§5.12)."""

    rid: Rid
    scope: MetaScope
    target: Name
    op: MetaOpName
    items: Annotated[list[MetaEntry], Meta(max_length=128)] = []
    major: Revision = -1
    lock: Annotated[str, Meta(max_length=64)] = ""


class MetaGet(Frame, frozen=True, tag="meta_get"):
    rid: Rid
    scope: MetaScope
    target: Name


class LockRequest(Frame, frozen=True, tag="lock"):
    """A lock operation on lock ``name`` of ``channel`` (§5.12): ``set`` (create, or
    change its TTL; owners), ``remove`` (owners), ``acquire`` (``wait``: join the
    fair queue instead of failing with LOCK_HELD), ``release`` (or stop waiting),
    ``revoke`` (owners: take it from its holder)."""

    rid: Rid
    channel: Name
    op: Literal["set", "remove", "acquire", "release", "revoke"]
    name: Name
    ttl_s: Annotated[int, Meta(ge=0, le=2**31)] = 10
    wait: bool = False


class LockQuery(Frame, frozen=True, tag="lock_q"):
    """List the locks of ``channel`` (members)."""

    rid: Rid
    channel: Name


StateKey = Annotated[str, Meta(min_length=1, max_length=128)]


class StateSet(Frame, frozen=True, tag="state_set"):
    """Your presence state in ``channel`` (§5.13); an empty ``state`` clears it."""

    rid: Rid
    channel: Name
    state: Annotated[dict[StateKey, Annotated[str, Meta(max_length=8192)]], Meta(max_length=32)]


class WhoNow(Frame, frozen=True, tag="who_now"):
    """Who is online in ``channel``, with their states (members only)."""

    rid: Rid
    channel: Name


class WhereNow(Frame, frozen=True, tag="where_now"):
    """The channels ``user`` is in while online, with their states there."""

    rid: Rid
    user: Name


ClientFrame = (
    Hello
    | Ping
    | Publish
    | Ack
    | Read
    | Delete
    | Join
    | Leave
    | Invite
    | HistoryQuery
    | PresenceQuery
    | Refresh
    | Probe
    | MetaSet
    | MetaGet
    | LockRequest
    | LockQuery
    | StateSet
    | WhoNow
    | WhereNow
)

# ------------------------------------------------------------- server -> client


class Welcome(Frame, frozen=True, tag="welcome"):
    user: str
    device: str
    session: str
    node: str
    region: str
    heartbeat_ms: int
    timeout_ms: int
    server_ts: int
    cursor: int
    max_body: int
    max_frame: int
    exp: int
    # Publishes per second this connection may send (docs/protocol.md §8.1); absent
    # from older servers: assume the documented default.
    publish_rate: int | None = None


class Pong(Frame, frozen=True, tag="pong"):
    ts: int
    server_ts: int


class PubAck(Frame, frozen=True, tag="puback"):
    """The message is durably committed with ``seq`` in ``conv``."""

    id: str
    conv: str
    seq: int
    pos: int
    ts: int
    dup: bool = False


class Messages(Frame, frozen=True, tag="msgs"):
    items: list[Event]


class Synced(Frame, frozen=True, tag="synced"):
    """Everything up to ``pos`` has been sent; what follows is live."""

    pos: int


class Ok(Frame, frozen=True, tag="ok"):
    rid: int


class Joined(Frame, frozen=True, tag="joined"):
    rid: int
    channel: str
    conv: str
    role: str


class HistoryPage(Frame, frozen=True, tag="history"):
    rid: int
    conv: str
    items: list[Event]
    more: bool


class UserPresence(msgspec.Struct, frozen=True, omit_defaults=True):
    user: str
    online: bool
    devices: int = 0
    since: int = 0


class PresenceState(Frame, frozen=True, tag="presence_state"):
    rid: int
    users: list[UserPresence]


class PresenceChange(Frame, frozen=True, tag="presence"):
    """A user sharing a channel with you went online or offline."""

    user: str
    online: bool
    devices: int
    ts: int


class MetaItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One stored metadata item: ``rev`` is the object's revision that last wrote it,
    ``by`` the user who did (empty for a backend), ``ts`` when (Unix ms)."""

    key: str
    value: str = ""
    rev: int = 0
    by: str = ""
    ts: int = 0


class MetaState(Frame, frozen=True, tag="meta"):
    """Reply to ``meta_get``: the whole object at revision ``major`` (0: never written)."""

    rid: int
    scope: str
    target: str
    major: int
    items: list[MetaItem] = []


class MetaOk(Frame, frozen=True, tag="meta_ok"):
    """Reply to ``meta_set``: committed as revision ``major`` (every written item has
    ``rev`` = ``major``); ``pos`` is the change event's feed position."""

    rid: int
    major: int
    pos: int


class LockOk(Frame, frozen=True, tag="lock_ok"):
    """Reply to ``lock``: the lock after the operation; ``queued``: you wait in its
    queue (a ``lock`` event with you as ``holder`` says when you have it)."""

    rid: int
    name: str
    holder: str = ""
    queued: bool = False
    pos: int = 0


class LockInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    ttl_s: int
    holder: str = ""
    since: int = 0
    waiters: list[str] = []


class Locks(Frame, frozen=True, tag="locks"):
    """Reply to ``lock_q``."""

    rid: int
    channel: str
    items: list[LockInfo] = []


class OnlineMember(msgspec.Struct, frozen=True, omit_defaults=True):
    user: str
    devices: int = 0
    since: int = 0
    state: dict[str, str] = {}


class Who(Frame, frozen=True, tag="who"):
    """Reply to ``who_now``: the channel's online members."""

    rid: int
    channel: str
    users: list[OnlineMember] = []


class ChannelState(msgspec.Struct, frozen=True, omit_defaults=True):
    channel: str
    state: dict[str, str] = {}


class Where(Frame, frozen=True, tag="where"):
    """Reply to ``where_now``: ``user``'s channels (none while offline)."""

    rid: int
    user: str
    online: bool
    channels: list[ChannelState] = []


class AuthOk(Frame, frozen=True, tag="auth_ok"):
    rid: int
    exp: int


class Error(Frame, frozen=True, tag="error"):
    """``rid`` or ``id`` names the request that failed, when there was one."""

    code: int
    msg: str
    rid: int | None = None
    id: str | None = None
    rev: int | None = None  # REVISION_CONFLICT: the current revision


class Moved(Frame, frozen=True, tag="moved"):
    """This node is draining: reconnect now, to one of ``urls`` (best first) if given.

    Sent before the close with SERVER_DRAINING (4061); ``urls`` may be empty (then
    the client's own list applies).  docs/protocol.md §3.5."""

    reason: str
    urls: list[str] = []


ServerFrame = (
    Welcome
    | Pong
    | PubAck
    | Messages
    | Synced
    | Ok
    | Joined
    | HistoryPage
    | PresenceState
    | PresenceChange
    | AuthOk
    | Moved
    | MetaState
    | MetaOk
    | LockOk
    | Locks
    | Who
    | Where
    | Error
)

CLIENT_TAGS = frozenset(
    {
        "hello",
        "ping",
        "pub",
        "ack",
        "read",
        "del",
        "join",
        "leave",
        "invite",
        "history_q",
        "presence_q",
        "auth",
        "probe",
        "meta_set",
        "meta_get",
        "lock",
        "lock_q",
        "state_set",
        "who_now",
        "where_now",
    }
)
SERVER_TAGS = frozenset(
    {
        "welcome",
        "pong",
        "puback",
        "msgs",
        "synced",
        "ok",
        "joined",
        "history",
        "presence_state",
        "presence",
        "auth_ok",
        "moved",
        "meta",
        "meta_ok",
        "lock_ok",
        "locks",
        "who",
        "where",
        "error",
    }
)
