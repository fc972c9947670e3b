"""Fan-out in runs: a commit's events handed to each connection once per run, not once
per event.

Theory of operation (docs/protocol.md §4.3)
-------------------------------------------
The recipients of an event are decided by ``(app, conv, audience)`` and, for a
channel, by its membership, which only ``join`` and ``leave`` events change.  So a
commit's events split into *runs*: maximal stretches of consecutive events of one app
with the same conversation and audience and no membership change among them.  Every
event of a run goes to exactly the same connections, so the hub hands each recipient
connection the whole run in one call (``Endpoint.offer_run``) and the connection adds
it to its queue with one list extension: Python work per connection is once per run,
and a commit of one busy channel is one run however many events it holds.

A run is encoded once per codec (``Run.encoded``): the list of encoded events and its
byte count are shared by every connection that speaks the codec, and each event's
encoding also lands in the per-event ``encodings`` dict that the recent-events cache
keeps for catch-up readers, so nothing is encoded twice.

Order: runs are offered in position order, so a user who belongs to two
conversations of one commit still gets its events in position order (a run of one
conversation, then the next); positions inside a run increase.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from relaydesk.protocol.frames import Event

if TYPE_CHECKING:
    from relaydesk.telemetry.recorder import Trace

Encodings = dict[str, bytes]


class EventCodec(Protocol):
    """What a run needs of a codec: its name and how it encodes one event."""

    @property
    def name(self) -> str: ...

    def encode_event(self, event: Event) -> bytes: ...


class Run:
    """Consecutive events of one app that go to the same connections (``split_runs``)."""

    __slots__ = (
        "_by_codec",
        "encodings",
        "events",
        "first_pos",
        "last_pos",
        "traced",
    )

    def __init__(
        self,
        events: Sequence[Event],
        encodings: Sequence[Encodings] | None = None,
    ) -> None:
        self.events = events
        # One dict per event, codec name -> bytes (shared with the recent-events cache).
        self.encodings: Sequence[Encodings] = (
            encodings if encodings is not None else [{} for _ in events]
        )
        self.first_pos = events[0].pos
        self.last_pos = events[-1].pos
        self._by_codec: dict[str, tuple[list[bytes], int]] = {}
        # (pos, trace) of the run's events sampled by telemetry (rare; usually empty).
        self.traced: list[tuple[int, Trace]] = []

    def encoded(self, codec: EventCodec) -> tuple[list[bytes], int]:
        """The run's events encoded by ``codec`` and their total size in bytes (made
        once per codec; callers must not modify the list)."""
        name = codec.name
        got = self._by_codec.get(name)
        if got is None:
            items: list[bytes] = []
            for event, encodings in zip(self.events, self.encodings, strict=True):
                data = encodings.get(name)
                if data is None:
                    data = encodings[name] = codec.encode_event(event)
                items.append(data)
            got = self._by_codec[name] = (items, sum(map(len, items)))
        return got

    def after(self, pos: int) -> int:
        """Index of the first event with a position above ``pos`` (len: none)."""
        events = self.events
        lo, hi = 0, len(events)
        while lo < hi:
            mid = (lo + hi) // 2
            if events[mid].pos <= pos:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _changes_membership(event: Event) -> bool:
    return event.kind == "join" or event.kind == "leave"


def split_runs(
    items: Sequence[tuple[str, Event, str | None]],
) -> Iterator[tuple[str, str | None, list[Event]]]:
    """Split ``(app, event, audience)`` items (in commit order) into runs:
    ``(app, audience, events)``.  A join or leave is a run of its own (it changes the
    recipients of what follows)."""
    run: list[Event] = []
    key: tuple[str, str, str | None] | None = None
    for app, event, audience in items:
        here = (app, event.conv, audience)
        if run and (here != key or _changes_membership(event)):
            assert key is not None
            yield key[0], key[2], run
            run = []
        run.append(event)
        key = here
        if _changes_membership(event):
            yield app, audience, run
            run = []
    if run:
        assert key is not None
        yield key[0], key[2], run
