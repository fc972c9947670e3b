"""Puts commit records from every node back into each app's position order.

Theory of operation (docs/protocol.md §4.5)
-------------------------------------------
Every node commits to the same database, where one row lock per app on that app's
position counter makes commits take contiguous ranges of the app's positions in
commit order.  Each node announces its ranges on the bus, one record per app of a
batch; a node must offer an app's events to its connections in position order and
without gaps, because a live connection trusts that every event of its app at or
below the app's ``fanned`` position has been offered to it.  Apps are independent:
each has its own position space, so each gets its own ``_Feed`` here, and a gap in
one app never holds back another.

Records reach a node out of order (different publishers) or not at all (the bus is
at-most-once; a node may die between its commit and its publish).  A feed holds
records that arrive early, releases them as soon as the range before them is
complete, and reports a *gap* once the range right after ``fanned`` has been missing
for ``gap_timeout`` seconds: the node then reads that range of that app from storage
and offers it as an ordinary record.  The ``horizon`` (the highest position known
committed, from records or from reading the counters) lets a trailing gap be found
too, when no later record arrives to reveal it.

The sequencer is on every record's path, so its cost does not grow with the number of
apps: it keeps the apps that have a gap, and the count of held records, up to date as
records come, instead of scanning every app's feed per record and per loop.

Pure: no I/O, time is a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

from relaydesk.server.cluster.records import CommitRecord


class _Feed:
    """One app's positions: releases its records in order, one contiguous run at a time."""

    __slots__ = ("_gap_since", "_pending", "fanned", "horizon")

    def __init__(self, fanned: int) -> None:
        self.fanned = fanned
        self.horizon = fanned
        self._pending: dict[int, CommitRecord] = {}  # first position -> record
        self._gap_since: float | None = None

    def offer(self, record: CommitRecord, now: float, stats: dict[str, int]) -> list[CommitRecord]:
        if record.last <= self.fanned:
            stats["stale"] += 1  # seen already (own echo, or filled from storage)
            return []
        if record.first <= self.fanned:
            record = record.after(self.fanned)
        self.horizon = max(self.horizon, record.last)
        known = self._pending.get(record.first)
        if known is None or known.last < record.last:
            self._pending[record.first] = record
        return self._release(now)

    def note_horizon(self, committed: int, now: float) -> None:
        if committed > self.horizon:
            self.horizon = committed
        self._track_gap(now)

    def rewind(self, pos: int, now: float) -> None:
        if pos < self.fanned:
            self.horizon = max(self.horizon, self.fanned)
            self.fanned = pos
            self._track_gap(now)

    def overdue(self, now: float, gap_timeout: float) -> tuple[int, int] | None:
        missing = self._missing()
        if missing is None or self._gap_since is None:
            return None
        if now < self._gap_since + gap_timeout:
            return None
        return missing

    def _missing(self) -> tuple[int, int] | None:
        upto = min(self._pending) - 1 if self._pending else self.horizon
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
        self._track_gap(now)
        return ready

    def _track_gap(self, now: float) -> None:
        if self._missing() is None:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = now


class Sequencer:
    """Releases each app's records in that app's position order."""

    def __init__(self, fanned: Mapping[str, int], gap_timeout: float) -> None:
        self.gap_timeout = gap_timeout
        self._feeds = {app: _Feed(pos) for app, pos in fanned.items()}
        self.stats = {"records": 0, "stale": 0, "held": 0, "gaps": 0}
        # Apps whose feed has a gap (``_gap_since`` set), in the order their gaps began.
        self._gapped: dict[str, None] = {}
        self._held = 0  # records held over every feed

    def _note_gap(self, app: str, feed: _Feed) -> None:
        if feed._gap_since is None:
            self._gapped.pop(app, None)
        else:
            self._gapped.setdefault(app)

    def _feed(self, app: str) -> _Feed:
        feed = self._feeds.get(app)
        if feed is None:  # an app that had no position when this node started
            feed = self._feeds[app] = _Feed(0)
        return feed

    def fanned(self, app: str) -> int:
        """The position of ``app`` up to which every record has been released."""
        feed = self._feeds.get(app)
        return 0 if feed is None else feed.fanned

    def horizon(self, app: str) -> int:
        """The highest position of ``app`` known committed."""
        feed = self._feeds.get(app)
        return 0 if feed is None else feed.horizon

    @property
    def held(self) -> int:
        """Records waiting for the range before them, over every app."""
        return self._held

    def offer(self, record: CommitRecord, now: float) -> list[CommitRecord]:
        """Take ``record``; return the records of its app now ready, in position order."""
        self.stats["records"] += 1
        feed = self._feed(record.app)
        before = len(feed._pending)
        ready = feed.offer(record, now, self.stats)
        self._held += len(feed._pending) - before
        self._note_gap(record.app, feed)
        self.stats["held"] = self._held
        return ready

    def note_horizon(self, committed: Mapping[str, int], now: float) -> None:
        """Storage says each app's positions up to ``committed[app]`` are committed."""
        for app, pos in committed.items():
            feed = self._feed(app)
            feed.note_horizon(pos, now)
            self._note_gap(app, feed)

    def rewind(self, fanned: Mapping[str, int], now: float) -> None:
        """Routing stopped at ``fanned[app]`` in each app: what follows becomes a gap."""
        for app, pos in fanned.items():
            feed = self._feeds.get(app)
            if feed is not None:
                feed.rewind(pos, now)
                self._note_gap(app, feed)

    def gap(self, now: float) -> tuple[str, int, int] | None:
        """An app and its range ``(after, upto]`` to read from storage, once overdue."""
        for app in self._gapped:
            missing = self._feeds[app].overdue(now, self.gap_timeout)
            if missing is not None:
                self.stats["gaps"] += 1
                return (app, *missing)
        return None

    def next_deadline(self) -> float | None:
        """When the first current gap becomes overdue (None: no gap)."""
        since = [s for app in self._gapped if (s := self._feeds[app]._gap_since) is not None]
        return min(since) + self.gap_timeout if since else None
