"""Reads a clustered node needs: committed ranges and membership as of a position.

A node of a cluster fans out events committed by any node.  When a range of an
app's positions never arrived over the bus it reads it here; when it first routes an
event of a channel it has not cached, it reads the channel's membership *as of the
position it has fanned out to*, then replays the join and leave events after it, so
the cache matches the feed's membership window (``joined_pos <= pos <= left_pos``,
storage/messages.py) whatever other nodes committed meanwhile.
"""

from __future__ import annotations

from relaydesk.protocol.frames import Event
from relaydesk.storage.engine import Tx
from relaydesk.storage.messages import EVENT_COLUMNS, event_from_row


def events_range_tx(
    tx: Tx, app: str, after: int, upto: int, limit: int
) -> list[tuple[str, str | None, Event]]:
    """Committed events of ``app`` with ``after < pos <= upto``, in position order,
    each with its app and audience (None: every member)."""
    rows = tx.query(
        f"SELECT app, audience, {EVENT_COLUMNS} FROM events WHERE app = ? AND pos > ?"
        " AND pos <= ? ORDER BY pos LIMIT ?",
        (app, after, upto, limit),
    )
    return [(r[0], r[1], event_from_row(r[2:])) for r in rows]


def members_as_of_tx(tx: Tx, app: str, conv: str, pos: int) -> dict[str, str]:
    """Members (user -> role) of channel ``conv`` right after position ``pos``."""
    return dict(
        tx.query(
            "SELECT user_id, role FROM members WHERE app = ? AND conv = ? AND joined_pos <= ?"
            " AND (left_pos IS NULL OR left_pos > ?)",
            (app, conv, pos, pos),
        )
    )
