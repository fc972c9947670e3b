"""Puts commit records from every node back into global position order.

Theory of operation (docs/protocol.md §4.5)
-------------------------------------------
Every node commits to the same database, where one row lock on the position counter
makes commits take contiguous position ranges in commit order.  Each node announces
its ranges on the bus; a node must offer events to its connections in position order
and without gaps, because a live connection trusts that everything at or below
``fanned_pos`` has been offered to it.

Records reach a node out of order (different publishers) or not at all (the bus is
at-most-once; a node may die between its commit and its publish).  The sequencer
holds records that arrive early, releases them as soon as the range before them is
complete, and reports a *gap* once the range right after ``fanned`` has been missing
for ``gap_timeout`` seconds: the node then reads that range from storage and offers
it as an ordinary record.  The ``horizon`` (the highest position known committed,
from records or from reading the counter) lets a trailing gap be found too, when no
later record arrives to reveal it.

Pure: no I/O, time is a parameter.
"""

from __future__ import annotations

from relaydesk.server.cluster.records import CommitRecord


class Sequencer:
    """Releases records in position order, one contiguous run at a time."""

    def __init__(self, fanned: int, gap_timeout: float) -> None:
        self.fanned = fanned
        self.horizon = fanned
        self.gap_timeout = gap_timeout
        self._pending: dict[int, CommitRecord] = {}  # first position -> record
        self._gap_since: float | None = None
        self.stats = {"records": 0, "stale": 0, "held": 0, "gaps": 0}

    @property
    def held(self) -> int:
        """Records waiting for the range before them."""
        return len(self._pending)

    def offer(self, record: CommitRecord, now: float) -> list[CommitRecord]:
        """Take ``record``; return the records now ready, in position order."""
        self.stats["records"] += 1
        if record.last <= self.fanned:
            self.stats["stale"] += 1  # seen already (own echo, or filled from storage)
            return []
        if record.first <= self.fanned:
            record = record.after(self.fanned)
        self.horizon = max(self.horizon, record.last)
        known = self._pending.get(record.first)
        if known is None or known.last < record.last:
            self._pending[record.first] = record
        return self._release(now)

    def note_horizon(self, committed: int, now: float) -> None:
        """Storage says positions up to ``committed`` are committed."""
        if committed > self.horizon:
            self.horizon = committed
        self._track_gap(now)

    def rewind(self, pos: int, now: float) -> None:
        """Routing stopped at ``pos``: what follows it becomes a gap to read again."""
        if pos < self.fanned:
            self.horizon = max(self.horizon, self.fanned)
            self.fanned = pos
            self._track_gap(now)

    def gap(self, now: float) -> tuple[int, int] | None:
        """The range ``(after, upto]`` to read from storage, once it is overdue."""
        missing = self._missing()
        if missing is None or self._gap_since is None:
            return None
        if now < self._gap_since + self.gap_timeout:
            return None
        self.stats["gaps"] += 1
        return missing

    def next_deadline(self) -> float | None:
        """When the current gap becomes overdue (None: no gap)."""
        if self._gap_since is None:
            return None
        return self._gap_since + self.gap_timeout

    def _missing(self) -> tuple[int, int] | None:
        if self._pending:
            upto = min(self._pending) - 1
        else:
            upto = self.horizon
        return (self.fanned, upto) if upto > self.fanned else None

    def _release(self, now: float) -> list[CommitRecord]:
        ready: list[CommitRecord] = []
        while self._pending:
            first = min(self._pending)
            if first > self.fanned + 1:
                break
            record = self._pending.pop(first)
            if record.last <= self.fanned:
                continue  # covered by a longer record released before it
            if record.first <= self.fanned:
                record = record.after(self.fanned)
            ready.append(record)
            self.fanned = record.last
        self.stats["held"] = len(self._pending)
        self._track_gap(now)
        return ready

    def _track_gap(self, now: float) -> None:
        if self._missing() is None:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = now
