"""Leases: one row per named role, with a holder, an expiry and a fencing epoch.

Theory of operation
-------------------
``acquire`` is one upsert that succeeds only when the row is free (absent or expired)
or already ours, and then bumps ``epoch``; ``renew`` extends the expiry only while the
row still names us *and* our epoch; ``release`` expires it at once (a clean shutdown
hands over without waiting).  Each is a single statement, atomic on SQLite and on
PostgreSQL (row lock of the upsert), so two nodes can never both win: the loser's
statement matches no row.  The epoch is the fencing token: it grows with every change
of holder, so work stamped with an old epoch is recognisable.

Instants are epoch milliseconds from the nodes' clocks (keep them in NTP sync; the
lease TTL must dwarf the skew).  Own migration component: ``db.migrate("lease", ...)``.
"""

from __future__ import annotations

from relaydesk.storage.engine import Tx

_SCHEMA_V1 = """
CREATE TABLE cluster_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
)
"""


def lease_migrations() -> list[str]:
    """The lease component's schema steps (the same SQL on both dialects)."""
    return [_SCHEMA_V1]


class LeaseStore:
    """Stateless SQL over a :class:`Tx`."""

    def acquire(self, tx: Tx, name: str, holder: str, now: int, expires_at: int) -> int | None:
        """Take the lease if it is free, expired or ours; return the new epoch, else None."""
        row = tx.one(
            "INSERT INTO cluster_leases (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " epoch = cluster_leases.epoch + 1, expires_at = excluded.expires_at"
            " WHERE cluster_leases.holder = excluded.holder OR cluster_leases.expires_at <= ?"
            " RETURNING epoch",
            (name, holder, expires_at, now),
        )
        return None if row is None else int(row[0])

    def renew(self, tx: Tx, name: str, holder: str, epoch: int, expires_at: int) -> bool:
        """Extend our lease; False when it is no longer ours (taken over)."""
        return (
            tx.execute(
                "UPDATE cluster_leases SET expires_at = ?"
                " WHERE name = ? AND holder = ? AND epoch = ?",
                (expires_at, name, holder, epoch),
            )
            == 1
        )

    def release(self, tx: Tx, name: str, holder: str, epoch: int) -> None:
        """Give the lease up now (it expires immediately)."""
        tx.execute(
            "UPDATE cluster_leases SET expires_at = 0 WHERE name = ? AND holder = ? AND epoch = ?",
            (name, holder, epoch),
        )

    def current(self, tx: Tx, name: str) -> tuple[str, int, int] | None:
        """``(holder, epoch, expires_at)`` of the lease."""
        row = tx.one("SELECT holder, epoch, expires_at FROM cluster_leases WHERE name = ?", (name,))
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))
