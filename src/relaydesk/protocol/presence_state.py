"""Presence state: a small key-value state per user per channel (docs/protocol.md §5.13).

Like Agora's ``setState``: a user publishes, in a channel they belong to, a few
string pairs (``{"mood": "typing"}``) that members see in ``who_now`` snapshots and
as ``state`` events in feed order.  The state lives while the user is online: a
user with no connected device anywhere has it cleared by the sweeper
(``server/features/presence_state.py``), which announces the clearing as an event too.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError

MAX_STATE_KEYS = 32
# UTF-8 bytes of every key and value of one user's state in one channel.
MAX_STATE_BYTES = 8192


class StateChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a ``state`` event (JSON): ``user``'s state in the channel now
    (empty: cleared)."""

    user: str
    state: dict[str, str] = {}


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(StateChange)


def encode_state_change(change: StateChange) -> bytes:
    return _ENCODER.encode(change)


def decode_state_change(data: bytes) -> StateChange:
    return _DECODER.decode(data)


def check_state(state: Mapping[str, str]) -> None:
    """Raise METADATA_TOO_LARGE (or INVALID_ARGUMENT for an empty key) if ``state``
    is over its limits."""
    if len(state) > MAX_STATE_KEYS:
        raise ProtocolError(
            ErrorCode.METADATA_TOO_LARGE, f"{len(state)} state keys; the limit is {MAX_STATE_KEYS}"
        )
    if any(not key for key in state):
        raise ProtocolError(ErrorCode.INVALID_ARGUMENT, "state keys may not be empty")
    size = sum(
        len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8", "surrogatepass"))
        for k, v in state.items()
    )
    if size > MAX_STATE_BYTES:
        raise ProtocolError(
            ErrorCode.METADATA_TOO_LARGE, f"state of {size} bytes; the limit is {MAX_STATE_BYTES}"
        )
