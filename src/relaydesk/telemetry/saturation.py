"""Saturation counters: how often a bounded setting was full, for how long, and how much
was asked of it (docs/diagnosis.md §saturation).

Theory of operation
-------------------
Every bounded queue, page, pool and batch of a node (STYLE rule 5) is a setting an
operator can change.  A bound that never fills costs nothing; one that fills is either
doing its job (a slow consumer is cut loose) or throttling healthy traffic, and only
measurements tell which.  So each bound reports *episodes*: an episode starts when the
bound is reached and ends when the pressure is gone, and carries its duration and its
*demand* — the size the bound would have needed to hold everything that was waiting
(the backlog of a send queue, the events of a catch-up, the publishes queued behind a
full commit batch, the reads queued for the reader pool).

An episode is recorded into two fixed-bucket histograms per setting in the telemetry
aggregates (``sat:<setting>`` durations in ms, ``satd:<setting>`` demands), so the
count of episodes (``n``), the time spent full (``sum``) and the demand percentiles are
stored per app, client region, node and minute like every latency stage, and merge
exactly across minutes and nodes.  The diagnosis names a setting from these counters
alone (``desk/diagnosis/model.py``): a rule never needs to know what the bound guards.

Two shapes of bound:

* **per-connection / per-batch** bounds (send queue, catch-up page, commit batch) are
  observed where they bind, on the event loop: the hook calls :meth:`EpisodeClock.start`
  and :meth:`EpisodeClock.stop` (or records a zero-length episode) and hands the
  finished :class:`Episode` to the recorder;
* **node-wide** bounds used from threads (the storage reader pool) keep a thread-safe
  :class:`PoolGauge`; the recorder drains it once a second (``Recorder.watch``).

This module is pure (no clock: callers pass ``now``), imports nothing from the server,
and is a leaf like the rest of ``telemetry``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

T = TypeVar("T")

#: The stage-histogram prefixes of a setting's episodes (durations ms, demand).
DURATION_PREFIX: Final = "sat:"
DEMAND_PREFIX: Final = "satd:"

#: The settings a node reports saturation for (``config.py`` names).
SEND_QUEUE_ITEMS: Final = "gateway.send_queue_items"
SEND_QUEUE_BYTES: Final = "gateway.send_queue_bytes"
CATCHUP_PAGE: Final = "gateway.catchup_page"
COMMIT_BATCH: Final = "storage.commit_batch_max"
READERS: Final = "storage.readers"
SETTINGS: Final = (SEND_QUEUE_ITEMS, SEND_QUEUE_BYTES, CATCHUP_PAGE, COMMIT_BATCH, READERS)

#: A read that waited less than this for a reader thread found one free (the executor's
#: own hand-off takes tens of microseconds on a loaded machine).
POOL_WAIT_FLOOR_S: Final = 0.002


@dataclass(frozen=True, slots=True)
class Episode:
    """One stretch during which a bound was reached."""

    setting: str
    duration_ms: float
    demand: float


def duration_stage(setting: str) -> str:
    """The stage-histogram name of ``setting``'s episode durations."""
    return DURATION_PREFIX + setting


def demand_stage(setting: str) -> str:
    """The stage-histogram name of ``setting``'s episode demands."""
    return DEMAND_PREFIX + setting


def setting_of(stage: str) -> str | None:
    """The setting a ``sat:`` stage name belongs to (None for any other stage)."""
    return stage.removeprefix(DURATION_PREFIX) if stage.startswith(DURATION_PREFIX) else None


class EpisodeClock:
    """Start/stop of one bound's episodes on one owner (a connection, the hub writer).

    Not thread-safe: the owner runs on the event loop.  ``demand`` accumulates what
    arrived while the bound was reached.
    """

    __slots__ = ("demand", "setting", "since")

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.since: float | None = None
        self.demand = 0.0

    @property
    def running(self) -> bool:
        """True while an episode is open."""
        return self.since is not None

    def start(self, now: float, demand: float = 0.0) -> None:
        """The bound was reached at ``now`` (a no-op while an episode is open, apart
        from adding ``demand``)."""
        if self.since is None:
            self.since = now
            self.demand = 0.0
        self.demand += demand

    def add(self, demand: float) -> None:
        """More demand arrived during the open episode (ignored when none is open)."""
        if self.since is not None:
            self.demand += demand

    def stop(self, now: float) -> Episode | None:
        """The pressure is gone at ``now``: the finished episode, or None if none ran."""
        if self.since is None:
            return None
        episode = Episode(self.setting, max(now - self.since, 0.0) * 1000.0, self.demand)
        self.since = None
        self.demand = 0.0
        return episode


class PoolGauge:
    """Waits for a pool of ``size`` workers (thread-safe): a task submitted while every
    worker was busy or spoken for found the pool full.

    ``timed(fn)`` wraps a task at submission, noting whether the pool was full then; the
    wrapper measures the wait when a worker starts it.  ``drain()`` hands back the
    episodes since the last drain: one per task that found the pool full and waited at
    least ``POOL_WAIT_FLOOR_S``, its wait as the duration and the tasks running or queued
    when it was submitted, plus itself, as the demand (how many workers would have
    served everything at once).  Waits of tasks that found a free worker are scheduling
    noise on a loaded machine, not saturation, and are not counted.
    """

    def __init__(self, setting: str, size: int, monotonic: Callable[[], float]) -> None:
        self.setting = setting
        self.size = size
        self._mono = monotonic
        self._lock = threading.Lock()
        self._queued = 0
        self._running = 0
        self._episodes: list[Episode] = []
        self.total_waits = 0
        self.total_wait_s = 0.0
        self.max_episodes = 10_000  # bounded: a node that never drains keeps the newest

    def timed(self, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` wrapped to record how long it waited for a worker."""
        submitted = self._mono()
        with self._lock:
            demand = self._running + self._queued + 1
            self._queued += 1
        full = demand > self.size

        def run() -> T:
            waited = self._mono() - submitted
            with self._lock:
                self._queued -= 1
                self._running += 1
                if full and waited >= POOL_WAIT_FLOOR_S:
                    self.total_waits += 1
                    self.total_wait_s += waited
                    if len(self._episodes) >= self.max_episodes:
                        del self._episodes[0]
                    self._episodes.append(Episode(self.setting, waited * 1000.0, float(demand)))
            try:
                return fn()
            finally:
                with self._lock:
                    self._running -= 1

        return run

    def drain(self) -> list[Episode]:
        """The episodes recorded since the last drain (oldest first)."""
        with self._lock:
            out, self._episodes = self._episodes, []
        return out


class Watcher(Protocol):
    """Something that drains node-wide gauges (``Recorder.watch``)."""

    def watch(self, gauge: PoolGauge) -> None: ...


def suggest_size(current: int, demand: float, *, headroom: float = 1.5, cap: int = 0) -> int:
    """A bound that would have held ``demand`` with ``headroom``, as a power of two, never
    below ``current`` + 1 (a suggestion must change something) and at most ``cap`` when
    one is given (a validated maximum in ``config.py``)."""
    want = max(float(current + 1), demand * headroom, 1.0)
    value = 1 << math.ceil(math.log2(want))
    return min(value, cap) if cap else value


def watch_reader_pool(
    db: object, recorder: Watcher | None, size: int, monotonic: Callable[[], float]
) -> PoolGauge | None:
    """Composition-root glue: give ``db`` (a storage engine with a ``reader_gauge``
    attribute) a :class:`PoolGauge` for ``storage.readers`` and let ``recorder`` drain it."""
    if recorder is None or not hasattr(db, "reader_gauge"):
        return None
    gauge = PoolGauge(READERS, size, monotonic)
    setattr(db, "reader_gauge", gauge)  # noqa: B010 (db is any engine)
    recorder.watch(gauge)
    return gauge
