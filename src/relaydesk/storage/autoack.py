"""The one query the auto-acknowledger needs: recent tickets naming an app, not yet
acknowledged.  Reads ``desk_tickets`` (owned by ``storage/desk.py``); uses the
``desk_tickets_created`` index.  Portable SQL."""

from __future__ import annotations

from relaydesk.storage.engine import Tx


class AutoAckStore:
    """SQL for :mod:`relaydesk.desk.autoack`."""

    def pending_tx(self, tx: Tx, created_since_ms: int, limit: int) -> list[int]:
        """Ids of active tickets created at or after ``created_since_ms`` that name an app
        and have no acknowledgement yet, oldest first."""
        rows = tx.query(
            "SELECT id FROM desk_tickets WHERE created_at >= ? AND app_id IS NOT NULL"
            " AND acknowledged_at IS NULL AND active = 1 ORDER BY created_at, id LIMIT ?",
            (created_since_ms, limit),
        )
        return [int(r[0]) for r in rows]
