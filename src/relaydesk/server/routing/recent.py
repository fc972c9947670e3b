"""The hub's memory of recent events: one copy serves every catch-up reader.

Theory of operation (docs/protocol.md §3.2)
-------------------------------------------
After a reconnect storm every device reads its feed from where it left off, and
most left off a few seconds ago.  Reading each device's feed from storage costs the
server clients × backlog (3,000 devices re-reading the same channel's last 2,000
events is six million rows) and, while it lasts, delays the devices' handover to
live delivery.  Instead the hub keeps the newest events it fanned out, in position
order, indexed by conversation, each with the encodings the fan-out made (one
encoding per codec, shared with every connection):

* **Complete above each app's ``floor``.**  Positions are per app (docs/protocol.md
  §4), so floor and last are too: every event of an app with ``floor(app) < pos <=
  last(app)`` is held (``add`` is called for every routed event, in each app's
  position order; the hub also loads the newest stored events of each app when it
  starts, so that devices reconnecting after a restart find them held).  A reader
  whose range starts at or above its app's floor is served from here; below it,
  from storage, one read per device.
* **Bounded.**  At most ``max_events`` events and about ``max_bytes`` bytes over
  every app; the oldest held are evicted first, raising their app's floor.
* **Same answer as storage.**  ``feed`` applies the rule of
  ``MessageStore.feed_tx`` — events of the user's conversations within their
  membership windows (``joined_pos <= pos <= left_pos``), addressed to everyone or
  to the user — to membership rows the caller read from storage no earlier than
  ``upto`` was fanned out, so both paths return the same events
  (tests/server/test_recent_events.py checks it against ``feed_tx``).  A deletion
  blanks the body of the message it deletes, as storage does.

Retention is not applied here: an event the sweeper removed from storage minutes
after its commit may still be served from memory while it is held.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import deque
from collections.abc import Iterable, Iterator, Mapping

from relaydesk.protocol.frames import Event

# Per-event bookkeeping counted against ``max_bytes`` on top of the body: the Event
# struct, its strings, list slots and (usually one) cached encoding.
EVENT_OVERHEAD = 320

Encodings = dict[str, bytes]
# (conv, joined_pos, left_pos or None): one membership row of a user.
Window = tuple[str, int, int | None]


class _Conv:
    """The held events of one conversation, ascending by position."""

    __slots__ = ("audience", "encodings", "events", "head", "pos")

    def __init__(self) -> None:
        self.pos: list[int] = []
        self.events: list[Event] = []
        self.audience: list[str | None] = []
        self.encodings: list[Encodings] = []
        self.head = 0  # entries before head are evicted

    def compact(self) -> None:
        h = self.head
        del self.pos[:h], self.events[:h], self.audience[:h], self.encodings[:h]
        self.head = 0


class RecentEvents:
    """The newest fanned-out events of every app (see the module docstring)."""

    def __init__(
        self, max_events: int, max_bytes: int, floors: Mapping[str, int] | None = None
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        # app -> floor: every event of the app with floor < pos <= last is held.  An app
        # missing here has floor 0: it had no events when this started.
        self._floor: dict[str, int] = dict(floors or {})
        self._last: dict[str, int] = dict(self._floor)
        self._convs: dict[tuple[str, str], _Conv] = {}
        self._order: deque[tuple[tuple[str, str], int]] = deque()  # (key, size), by pos
        self._bytes = 0
        self.stats = {"served": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._order)

    @staticmethod
    def _size(event: Event) -> int:
        return len(event.body) + EVENT_OVERHEAD

    def floor(self, app: str) -> int:
        """Every event of ``app`` after this position (up to ``last(app)``) is held."""
        return self._floor.get(app, 0)

    def last(self, app: str) -> int:
        """The position of the newest event of ``app`` held (or its floor)."""
        return self._last.get(app, 0)

    def covers(self, app: str, after: int) -> bool:
        """Whether every event of ``app`` after ``after`` (up to ``last(app)``) is held."""
        return after >= self._floor.get(app, 0)

    def add(self, app: str, audience: str | None, event: Event, encodings: Encodings) -> None:
        """Hold ``event``; called for every fanned-out event in its app's position order."""
        if event.pos <= self._last.get(app, 0):
            return  # routed again after a failed commit report: already held
        key = (app, event.conv)
        conv = self._convs.get(key)
        if conv is None:
            conv = self._convs[key] = _Conv()
        conv.pos.append(event.pos)
        conv.events.append(event)
        conv.audience.append(audience)
        conv.encodings.append(encodings)
        size = self._size(event)
        self._order.append((key, size))
        self._bytes += size
        self._last[app] = event.pos
        if event.kind == "del":
            self._blank(key, event.seq)
        while self._order and (len(self._order) > self.max_events or self._bytes > self.max_bytes):
            self._evict()

    def _evict(self) -> None:
        key, size = self._order.popleft()
        self._bytes -= size
        conv = self._convs[key]
        self._floor[key[0]] = conv.pos[conv.head]
        conv.head += 1
        self.stats["evicted"] += 1
        if conv.head == len(conv.pos):
            del self._convs[key]
        elif conv.head >= 64 and conv.head * 2 >= len(conv.pos):
            conv.compact()

    def _blank(self, key: tuple[str, str], seq: int) -> None:
        """Message ``seq`` of ``key`` was deleted: storage keeps it with an empty body."""
        conv = self._convs.get(key)
        if conv is None:
            return
        for i in range(len(conv.pos) - 1, conv.head - 1, -1):
            ev = conv.events[i]
            if ev.kind == "msg" and ev.seq == seq:
                if ev.body or ev.enc:
                    conv.events[i] = _replace_body(ev)
                    conv.encodings[i] = {}
                return
            if ev.kind == "msg" and ev.seq < seq:
                return

    def feed(
        self,
        app: str,
        user: str,
        windows: Iterable[Window],
        after: int,
        upto: int,
        limit: int,
    ) -> list[tuple[Event, Encodings]]:
        """The user's feed with ``after < pos <= upto``, first ``limit`` events, from
        memory (``covers(app, after)`` must hold); ``windows`` as ``memberships_tx`` reads
        them, at or after the time ``upto`` was fanned out."""
        runs: list[Iterator[tuple[int, Event, Encodings]]] = []
        for conv_id, joined, left in windows:
            conv = self._convs.get((app, conv_id))
            if conv is None:
                continue
            lo = max(after, joined - 1)
            hi = upto if left is None else min(upto, left)
            if hi <= lo:
                continue
            start = bisect.bisect_right(conv.pos, lo, conv.head)
            stop = bisect.bisect_right(conv.pos, hi, start)
            runs.append(_run(conv, start, stop, user, limit))
        out = [(ev, enc) for _, ev, enc in itertools.islice(heapq.merge(*runs), limit)]
        self.stats["served"] += len(out)
        return out


def _run(
    conv: _Conv, start: int, stop: int, user: str, limit: int
) -> Iterator[tuple[int, Event, Encodings]]:
    n = 0
    for i in range(start, stop):
        audience = conv.audience[i]
        if audience is None or audience == user:
            yield conv.pos[i], conv.events[i], conv.encodings[i]
            n += 1
            if n >= limit:
                return


def _replace_body(event: Event) -> Event:
    return Event(
        conv=event.conv,
        pos=event.pos,
        seq=event.seq,
        kind=event.kind,
        sender=event.sender,
        dev=event.dev,
        id=event.id,
        ts=event.ts,
        body=b"",
        enc="",
        subject=event.subject,
        role=event.role,
    )
