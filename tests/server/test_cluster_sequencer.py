"""The cluster sequencer: records from several nodes back into position order (pure)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaydesk.protocol.frames import Event
from relaydesk.server.cluster import CommitRecord, Item, Sequencer, decode_record, encode_record


def rec(
    first: int, last: int, node: str = "b", with_items: bool = True, app: str = "app"
) -> CommitRecord:
    items = tuple(
        Item(app, None, Event(conv="ch:x", pos=p, seq=p, kind="msg", sender="u"))
        for p in range(first, last + 1)
    )
    return CommitRecord(node, app, first, last, items if with_items else None)


def positions(records: list[CommitRecord]) -> list[int]:
    return [i.event.pos for r in records for i in r.items or ()]


def test_in_order_records_are_released_at_once() -> None:
    seq = Sequencer({"app": 10}, gap_timeout=0.2)
    assert positions(seq.offer(rec(11, 12), 0.0)) == [11, 12]
    assert positions(seq.offer(rec(13, 13), 0.0)) == [13]
    assert seq.fanned("app") == 13 and seq.gap(100.0) is None


def test_an_early_record_waits_for_the_range_before_it() -> None:
    seq = Sequencer({"app": 0}, gap_timeout=0.2)
    assert seq.offer(rec(4, 6), 1.0) == []
    assert seq.held == 1
    assert seq.gap(1.1) is None  # not overdue yet
    assert positions(seq.offer(rec(1, 3), 1.15)) == [1, 2, 3, 4, 5, 6]
    assert seq.held == 0 and seq.gap(9.0) is None


def test_a_missing_range_becomes_an_overdue_gap() -> None:
    seq = Sequencer({"app": 0}, gap_timeout=0.2)
    seq.offer(rec(4, 6), 1.0)
    assert seq.next_deadline() == pytest.approx(1.2)
    assert seq.gap(1.19) is None
    assert seq.gap(1.2) == ("app", 0, 3)  # read 0 < pos <= 3 from storage
    filled = CommitRecord("", "app", 1, 3, ())  # storage had nothing left (retention)
    assert [(r.first, r.last) for r in seq.offer(filled, 1.3)] == [(1, 3), (4, 6)]
    assert seq.fanned("app") == 6


def test_a_trailing_gap_is_found_from_the_counter() -> None:
    seq = Sequencer({"app": 5}, gap_timeout=0.2)
    seq.note_horizon({"app": 8}, 2.0)  # committed up to 8, nothing announced
    assert seq.gap(2.1) is None
    assert seq.gap(2.2) == ("app", 5, 8)


def test_duplicates_and_overlaps_are_released_once() -> None:
    seq = Sequencer({"app": 0}, gap_timeout=0.2)
    assert positions(seq.offer(rec(1, 5), 0.0)) == [1, 2, 3, 4, 5]
    assert seq.offer(rec(1, 5), 0.0) == []  # echo
    assert seq.stats["stale"] == 1
    # A gap fill that ran past a record which then arrives late.
    assert positions(seq.offer(rec(4, 8), 0.0)) == [6, 7, 8]
    seq.offer(rec(10, 12), 0.0)
    seq.offer(rec(10, 11), 0.0)  # shorter duplicate of a held record is ignored
    assert positions(seq.offer(rec(9, 9), 0.0)) == [9, 10, 11, 12]


def test_rewind_turns_unrouted_positions_into_a_gap() -> None:
    seq = Sequencer({"app": 0}, gap_timeout=0.1)
    seq.offer(rec(1, 4), 0.0)
    seq.rewind({"app": 2}, 1.0)  # routing failed after position 2
    assert seq.fanned("app") == 2
    assert seq.gap(1.1) == ("app", 2, 4)


def test_records_survive_the_wire() -> None:
    record = rec(7, 9, node="edge-b")
    assert decode_record(encode_record(record)) == record
    bare = CommitRecord("edge-b", "app", 7, 9, None)
    assert decode_record(encode_record(bare)) == bare


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        encode_record(CommitRecord("n", "app", 5, 4)),
        encode_record(CommitRecord("n", "app", 0, 0)),
        # An event of another app in the record of "app".
        encode_record(CommitRecord("n", "app", 1, 1, rec(1, 1, app="other").items)),
        # A record of the global-position version (tag "c", no app).
        b"\x95\xa1c\xa1n\x01\x01\xc0",
    ],
)
def test_malformed_records_are_refused(data: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_record(data)


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=25),
    order=st.randoms(use_true_random=False),
    lost=st.sets(st.integers(0, 24)),
)
def test_any_arrival_order_with_losses_yields_every_position_once_in_order(
    sizes: list[int], order: object, lost: set[int]
) -> None:
    records, first = [], 1
    for n in sizes:
        records.append(rec(first, first + n - 1))
        first += n
    last = first - 1
    arriving = [r for i, r in enumerate(records) if i not in lost]
    order.shuffle(arriving)  # type: ignore[attr-defined]
    seq = Sequencer({"app": 0}, gap_timeout=1.0)
    out: list[CommitRecord] = []
    now = 0.0
    for r in arriving:
        now += 0.1
        out += seq.offer(r, now)
    seq.note_horizon({"app": last}, now)
    while seq.fanned("app") < last:  # what the hub does: fill overdue gaps from storage
        now += 1.0
        gap = seq.gap(now)
        assert gap is not None
        app, after, upto = gap
        out += seq.offer(rec(after + 1, upto, node="", app=app), now)
    assert positions(out) == list(range(1, last + 1))


def test_apps_are_sequenced_apart() -> None:
    """Positions are per app: a record of one app never waits for another app's range,
    and a gap in one app holds back only that app."""
    seq = Sequencer({"a": 10}, gap_timeout=0.2)
    assert positions(seq.offer(rec(11, 12, app="a"), 0.0)) == [11, 12]
    assert positions(seq.offer(rec(1, 3, app="b"), 0.0)) == [1, 2, 3]  # new app, from 0
    assert seq.offer(rec(15, 15, app="a"), 0.0) == []  # a: 13-14 missing
    assert positions(seq.offer(rec(4, 4, app="b"), 0.1)) == [4]  # b flows meanwhile
    assert seq.fanned("a") == 12 and seq.fanned("b") == 4 and seq.held == 1
    assert seq.gap(0.2) == ("a", 12, 14)
    seq.note_horizon({"a": 15, "b": 6}, 0.3)
    filled = seq.offer(rec(13, 14, node="", app="a"), 0.3)
    assert positions(filled) == [13, 14, 15]
    assert seq.gap(0.6) == ("b", 4, 6)  # b's trailing gap, found from its counter


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["offer", "horizon", "rewind"]),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 30),
            st.integers(0, 3),
        ),
        max_size=60,
    )
)
def test_held_count_and_gap_deadline_match_every_feed(
    steps: list[tuple[str, str, int, int]],
) -> None:
    """The held count, the first gap and its deadline, kept as records come, are those
    found by looking at every app's feed."""
    seq = Sequencer({"a": 0}, gap_timeout=0.5)
    now = 0.0
    for kind, app, pos, width in steps:
        now += 0.1
        if kind == "offer":
            seq.offer(rec(pos, pos + width, app=app), now)
        elif kind == "horizon":
            seq.note_horizon({app: pos}, now)
        else:
            seq.rewind({app: min(pos, seq.fanned(app))}, now)
        feeds = seq._feeds.values()
        assert seq.held == sum(len(f._pending) for f in feeds)
        since = [f._gap_since for f in feeds if f._gap_since is not None]
        assert seq.next_deadline() == (min(since) + 0.5 if since else None)
        overdue = {name: f._missing() for name, f in seq._feeds.items() if f.overdue(now, 0.5)}
        gap = seq.gap(now)
        assert (gap is None) == (not overdue)
        if gap is not None:
            assert overdue[gap[0]] == gap[1:]


async def test_an_unreachable_bus_stops_start_up_with_a_clear_error() -> None:
    from relaydesk.server.cluster import BusError, NatsBus

    bus = NatsBus("nats://127.0.0.1:9", "c", "n", connect_within_s=1.0)
    with pytest.raises(BusError, match=r"cannot reach the cluster bus at nats://127\.0\.0\.1:9"):
        await bus.start(lambda data: None)
