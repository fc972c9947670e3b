"""Presence state per user per channel: the SQL (docs/protocol.md §5.13).

A ``StateOp`` is an operation of the group commit: the state is stored and becomes
a ``state`` event in the channel's feed at the next position."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec

from relaydesk.protocol.addresses import Conversation
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import Event
from relaydesk.protocol.presence_state import StateChange, check_state, encode_state_change
from relaydesk.storage.engine import Tx

PRESENCE_STATE_MIGRATIONS = [
    """
    CREATE TABLE presence_states (
        app TEXT NOT NULL,
        conv TEXT NOT NULL,
        user_id TEXT NOT NULL,
        state TEXT NOT NULL,
        ts BIGINT NOT NULL,
        PRIMARY KEY (app, conv, user_id)
    )
    """
]


class StateOp(msgspec.Struct, frozen=True):
    """Set (or with an empty ``state``, clear) ``user``'s state in channel ``conv``."""

    app: str
    actor: str
    device: str
    conv: Conversation
    user: str
    state: tuple[tuple[str, str], ...]
    ts: int
    privileged: bool = False  # the sweeper clearing the state of a user gone offline


RoleOf = Callable[[str, str, str], "str | None"]


def apply_state_tx(tx: Tx, op: StateOp, pos: int, role_of: RoleOf) -> Event:
    state = dict(op.state)
    check_state(state)
    if not op.privileged:
        if op.user != op.actor:
            raise ProtocolError(ErrorCode.FORBIDDEN, "users set only their own state")
        if role_of(op.app, op.conv.id, op.actor) is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {op.conv.channel!r}")
    key = (op.app, op.conv.id, op.user)
    if state:
        tx.execute(
            "INSERT INTO presence_states (app, conv, user_id, state, ts) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (app, conv, user_id) DO UPDATE SET state = excluded.state,"
            " ts = excluded.ts",
            (*key, json.dumps(state, sort_keys=True), op.ts),
        )
    else:
        removed = tx.execute(
            "DELETE FROM presence_states WHERE app = ? AND conv = ? AND user_id = ?", key
        )
        if op.privileged and not removed:
            raise ProtocolError(ErrorCode.NOT_FOUND, "no state to clear")
    return Event(
        conv=op.conv.id,
        pos=pos,
        seq=0,
        kind="state",
        sender=op.actor,
        dev=op.device,
        ts=op.ts,
        body=encode_state_change(StateChange(user=op.user, state=state)),
        subject=op.user,
    )


def channel_states_tx(tx: Tx, app: str, conv: str) -> dict[str, dict[str, str]]:
    return {
        user: json.loads(state)
        for user, state in tx.query(
            "SELECT user_id, state FROM presence_states WHERE app = ? AND conv = ?", (app, conv)
        )
    }


def user_states_tx(tx: Tx, app: str, user: str) -> dict[str, dict[str, str]]:
    """The user's state per channel conversation."""
    return {
        conv: json.loads(state)
        for conv, state in tx.query(
            "SELECT conv, state FROM presence_states WHERE app = ? AND user_id = ?", (app, user)
        )
    }


def stateful_users_tx(tx: Tx) -> list[tuple[str, str, str]]:
    """(app, conv, user) of every stored state (the sweeper's list)."""
    return [(a, c, u) for a, c, u in tx.query("SELECT app, conv, user_id FROM presence_states")]
