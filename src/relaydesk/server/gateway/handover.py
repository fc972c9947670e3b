"""The catch-up to live handover of one connection's feed, as a pure state machine.

Theory of operation (docs/protocol.md §3.2, §4.3)
-------------------------------------------------
A connection delivers the user's feed in position order with nothing skipped and
nothing repeated.  Two sources feed it: a *reader* that reads the feed from storage
(or the hub's cache of recent events) a page at a time, and *live offers* that the
hub makes once per event as it fans each commit out.  The hub offers events in
position order and, between two awaits of the connection, every event at or below
``fanned_pos`` has been offered and none above it (hub.py, theory of operation).

``FeedSwitch`` decides, for each offer and each page read, what is written and when
the connection goes live:

* **Catching up, not armed.**  Offers are ignored: they are in storage.  The reader
  reads ``(taken, fanned_pos]``.
* **Catching up, armed at B.**  Once the reader is *within the live queue's reach* —
  right at the start when ``fanned_pos - cursor`` is at most the queue's item bound
  (``fanned_pos`` is the connection's app's; positions count every event of the app,
  other users' too, so this over-estimates the feed's distance),
  else as soon as a page comes back short — the switch arms at ``B = fanned_pos``:
  from then on every offer (all of them have ``pos > B``) is kept in the bounded
  queue, and the reader reads only ``(taken, B]``.  When that range is exhausted (a
  short page), the reader has written every event ``<= B`` and the queue holds every
  event ``> B``: the switch goes live and the queue is written next.  No gap (the
  two ranges meet at B), no duplicate (they do not overlap), and the distance at
  handover is bounded by the queue's size, whatever the publish rate: the old rule
  ("go live once ``fanned_pos`` did not move during a read") never held while the
  tail moved faster than one read, which is how 3,000 reconnecting clients stayed
  in catch-up for minutes.
* **Overflow.**  If the queue passes its bound while armed (more events arrived
  during one read than the queue holds), it is dropped and the switch disarms; the
  reader continues from ``taken`` and re-arms after its next short page.  The same
  bound in live mode is the slow-consumer rule: drop the queue, back to catch-up.

Every arming gets a new ``epoch``; a page read under an older arming never hands
over, since the queue it was meant to meet may have been dropped meanwhile.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.Enum):
    CATCHUP = "catchup"
    LIVE = "live"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Read the feed with ``after < pos <= upto`` (at most a page of it)."""

    after: int
    upto: int
    epoch: int  # the arming this read belongs to (0: read while not armed)


@dataclass(frozen=True, slots=True)
class PageResult:
    """What a page read decided: ``synced`` is the position to announce in ``synced``
    (the first handover of the connection only), else None."""

    live: bool
    synced: int | None


class FeedSwitch:
    """Catch-up/live bookkeeping of one connection (pure; no I/O, no clock).

    ``taken``: every feed event ``<= taken`` has been handed to the writer.
    ``queued``: every feed event ``<= queued`` is taken or waiting in the queue.
    """

    __slots__ = (
        "_bytes",
        "_epoch",
        "_limit_bytes",
        "_limit_items",
        "armed_at",
        "epoch",
        "last",
        "mode",
        "over_items",
        "queue",
        "queued",
        "resyncs",
        "synced",
        "taken",
    )

    def __init__(self, limit_items: int, limit_bytes: int) -> None:
        self._limit_items = limit_items
        self._limit_bytes = limit_bytes
        self.mode = Mode.CATCHUP
        self.taken = 0
        self.queued = 0
        # A list, not a deque: an empty list is 56 bytes, an empty deque ~600 (its
        # first block), and most connections are idle (docs/benchmarks.md memory).
        self.queue: list[bytes] = []
        self.last = 0  # position of the newest queued event
        self._bytes = 0
        self.armed_at: int | None = None
        self.epoch = 0  # current arming (0: none yet)
        self._epoch = 0
        self.synced = False
        self.resyncs = 0  # live -> catch-up fallbacks (slow consumer)
        self.over_items = False  # the last fallback passed the item bound (else bytes)

    # -- inputs --------------------------------------------------------------

    def start(self, cursor: int, fanned_pos: int) -> None:
        """Deliver the feed after ``cursor``; the hub has fanned out up to ``fanned_pos``."""
        self.mode = Mode.CATCHUP
        self.taken = self.queued = cursor
        self._drop()
        self.armed_at = None
        if fanned_pos - cursor <= self._limit_items:
            self._arm(fanned_pos)

    @property
    def queued_bytes(self) -> int:
        """Bytes of live events waiting in the queue."""
        return self._bytes

    def offer(self, pos: int, data: bytes, reserved: int = 0) -> bool:
        """The hub offers event ``pos`` (encoded as ``data``).  True: wake the writer."""
        return self.offer_many(pos, [data], len(data), reserved)

    def offer_many(self, last: int, items: list[bytes], size: int, reserved: int = 0) -> bool:
        """The hub offers consecutive feed events ending at ``last`` (encoded as
        ``items``, ``size`` bytes in all; none at or below ``queued``).  True: wake
        the writer.

        ``reserved``: bytes of other output (replies) waiting on the same connection,
        which count against the same byte budget (docs/protocol.md §8.1)."""
        if last <= self.queued or (self.mode is Mode.CATCHUP and self.armed_at is None):
            return False
        queue = self.queue
        was_empty = not queue
        queue += items
        self._bytes += size
        self.queued = self.last = last
        if len(queue) > self._limit_items or self._bytes + reserved > self._limit_bytes:
            self.over_items = len(queue) > self._limit_items
            self.shed()
            return True
        return was_empty and self.mode is Mode.LIVE

    def shed(self) -> None:
        """Drop the queued live events (they are in storage) and read from ``taken`` on:
        a slow consumer, or other output needing the byte budget."""
        self._drop()
        self.queued = self.taken
        self.armed_at = None
        if self.mode is Mode.LIVE:
            # Slow consumer: serve it from storage at its own pace.
            self.mode = Mode.CATCHUP
            self.resyncs += 1

    def next_read(self, fanned_pos: int) -> PageRequest:
        """The range the reader reads next (catch-up mode only)."""
        if self.armed_at is not None:
            return PageRequest(self.taken, self.armed_at, self.epoch)
        return PageRequest(self.taken, fanned_pos, 0)

    def page_read(
        self, req: PageRequest, last_pos: int | None, full: bool, fanned_pos: int
    ) -> PageResult:
        """The reader read ``req``: its events (newest ``last_pos``, None if none) are
        being written; ``full``: the page was full, more may follow in the range."""
        if last_pos is not None and last_pos > self.taken:
            self.taken = last_pos
            if self.armed_at is None:
                self.queued = self.taken
        if full:
            return PageResult(False, None)
        # Every event <= req.upto has been handed to the writer.
        if req.upto > self.taken:
            self.taken = req.upto
            if self.armed_at is None:
                self.queued = self.taken
        if self.armed_at is None:
            self._arm(fanned_pos)
        elif req.epoch != self.epoch:
            return PageResult(False, None)  # re-armed further on meanwhile: read on
        if self.armed_at is not None and self.taken >= self.armed_at:
            # The queue holds exactly the events after armed_at == taken.
            self.mode = Mode.LIVE
            self.armed_at = None
            first = not self.synced
            self.synced = True
            return PageResult(True, self.taken if first else None)
        return PageResult(False, None)

    def take_batch(self) -> list[bytes]:
        """Everything queued, for one ``msgs`` frame (live mode)."""
        items = self.queue
        self.queue = []
        self._bytes = 0
        self.taken = self.last
        return items

    # -- internals -----------------------------------------------------------

    def _arm(self, at: int) -> None:
        at = max(at, self.taken)
        self._epoch += 1
        self.epoch = self._epoch
        self.armed_at = at
        self.queued = at
        self._drop()

    def _drop(self) -> None:
        self.queue.clear()
        self._bytes = 0
