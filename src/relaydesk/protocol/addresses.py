"""Conversation addresses (docs/protocol.md §2.3).

Clients address ``user:U`` (the direct conversation with U), ``channel:C``, or a
conversation id they received: ``dm:A:B`` (A < B) or ``ch:C``.  The server always
reports conversation ids.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.tokens import NAME_RE, Claims


class Conversation(NamedTuple):
    id: str
    kind: Literal["dm", "ch"]
    members: tuple[str, ...]  # the two users of a dm; () for a channel
    channel: str  # "" for a dm


def dm_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"dm:{lo}:{hi}"


def channel_conversation(name: str) -> Conversation:
    if not NAME_RE.match(name):
        raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"invalid channel name {name!r}")
    return Conversation(f"ch:{name}", "ch", (), name)


def resolve(address: str, me: str) -> Conversation:
    """The conversation ``me`` means by ``address``; raises INVALID_ARGUMENT."""
    kind, _, rest = address.partition(":")
    if kind == "user":
        if not NAME_RE.match(rest):
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"invalid user id {rest!r}")
        return Conversation(dm_id(me, rest), "dm", tuple(sorted((me, rest))), "")
    if kind in ("channel", "ch"):
        return channel_conversation(rest)
    if kind == "dm":
        a, sep, b = rest.partition(":")
        if not sep or not NAME_RE.match(a) or not NAME_RE.match(b) or a > b:
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"invalid conversation id {address!r}")
        return Conversation(address, "dm", (a, b), "")
    raise ProtocolError(
        ErrorCode.INVALID_ARGUMENT,
        f"invalid address {address!r}: expected user:U, channel:C, dm:A:B or ch:C",
    )


def check_scope(claims: Claims, conv: Conversation) -> None:
    """Raise FORBIDDEN if a confined token may not address ``conv`` (§2.2): a channel
    needs an explicit grant, a direct conversation a listed peer (or oneself)."""
    if not claims.confined:
        return
    if conv.kind == "ch":
        if conv.channel not in claims.ch:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"this token is not granted channel {conv.channel!r}"
            )
        return
    me = claims.sub
    if me not in conv.members or not all(claims.may_see(u) for u in conv.members):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"this token may not address {conv.id}")
