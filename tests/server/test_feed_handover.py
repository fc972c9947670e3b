"""The catch-up to live handover (server/gateway/handover.py), as a pure state machine.

A small model drives ``FeedSwitch`` the way the connection and the hub do: commits
append events to storage and are offered in position order (only some belong to the
user's feed), a reader reads pages of the feed that come back after an arbitrary
number of further commits, and a writer takes live batches.  Every schedule must
deliver the feed exactly once, in order; and while the tail keeps moving the switch
must go live within a bounded number of reads, at a bounded distance.
"""

from __future__ import annotations

import random

import pytest

from relaydesk.server.gateway.handover import FeedSwitch, Mode, PageRequest


class Model:
    """Storage, the hub's fan-out and one connection's writer, around a FeedSwitch."""

    def __init__(self, switch: FeedSwitch, page: int, share: float, rng: random.Random) -> None:
        self.switch = switch
        self.page = page
        self.share = share  # fraction of positions in this user's feed
        self.rng = rng
        self.fanned = 0
        self.feed: list[int] = []  # positions of the user's feed, all committed
        self.written: list[int] = []  # what reached the socket, in order
        self.reads = 0
        self.handover_distance: int | None = None

    def commit(self, n: int) -> None:
        for _ in range(n):
            self.fanned += 1
            if self.rng.random() < self.share:
                self.feed.append(self.fanned)
                self.switch.offer(self.fanned, self.fanned.to_bytes(8, "big"))

    def read(self, req: PageRequest) -> list[int]:
        """A page as storage answers it (the feed is append-only)."""
        return [p for p in self.feed if req.after < p <= req.upto][: self.page]

    def write_live(self) -> None:
        if self.switch.mode is Mode.LIVE and self.switch.queue:
            self.written += [int.from_bytes(b, "big") for b in self.switch.take_batch()]

    def catchup_step(self, commits_during_read: int) -> None:
        req = self.switch.next_read(self.fanned)
        page = self.read(req) if req.upto > req.after else []
        self.reads += 1
        self.commit(commits_during_read)  # the tail moves while the read runs
        result = self.switch.page_read(
            req, page[-1] if page else None, len(page) >= self.page, self.fanned
        )
        self.written += page
        if result.live and self.handover_distance is None:
            self.handover_distance = len(self.switch.queue)


def run(seed: int, *, backlog: int, rate: int, limit: int, page: int, steps: int) -> Model:
    rng = random.Random(seed)
    switch = FeedSwitch(limit_items=limit, limit_bytes=10**9)
    model = Model(switch, page, share=rng.choice([0.1, 0.5, 1.0]), rng=rng)
    model.commit(backlog)
    cursor = rng.randint(0, model.fanned)
    # The device had everything up to its cursor on a previous connection.
    switch.start(cursor, model.fanned)
    model.written = [p for p in model.feed if p <= cursor]
    for _ in range(steps):
        if switch.mode is Mode.CATCHUP:
            model.catchup_step(rng.randint(0, rate))
        else:
            model.commit(rng.randint(0, rate))
            if rng.random() < 0.7:
                model.write_live()
    model.commit(rng.randint(0, rate))
    # Drain: the tail stops, everything must arrive.
    for _ in range(len(model.feed) + 10):
        if switch.mode is Mode.CATCHUP:
            model.catchup_step(0)
        elif switch.queue:
            model.write_live()
        else:
            break
    assert switch.mode is Mode.LIVE and not switch.queue
    return model


@pytest.mark.parametrize("seed", range(300))
def test_every_schedule_delivers_the_feed_exactly_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    model = run(
        seed,
        backlog=rng.randint(0, 3000),
        rate=rng.choice([0, 5, 40, 200]),  # positions committed per read
        limit=rng.choice([8, 64, 500]),
        page=rng.choice([1, 7, 100]),
        steps=rng.randint(1, 200),
    )
    assert model.written == model.feed
    # Acks may reach ``taken``: never beyond what was fanned out, never short of the feed.
    assert (model.feed[-1] if model.feed else 0) <= model.switch.taken <= model.fanned


def test_goes_live_while_the_tail_keeps_moving() -> None:
    """Every read takes as long as 150 commits take: the old rule (live once a read
    saw ``fanned_pos`` unchanged) never held; the switch hands over after one read."""
    switch = FeedSwitch(limit_items=2000, limit_bytes=10**9)
    model = Model(switch, page=500, share=1.0, rng=random.Random(1))
    model.commit(900)
    switch.start(800, model.fanned)  # within the queue's reach: armed at once
    model.catchup_step(150)
    assert switch.mode is Mode.LIVE and model.reads == 1
    assert switch.synced
    # At the handover the queue held what the read did not: exactly the 150 new ones.
    assert model.handover_distance == 150
    model.write_live()
    assert model.written == list(range(801, 1051))


def test_deep_backlog_arms_after_the_first_short_page_and_converges() -> None:
    switch = FeedSwitch(limit_items=300, limit_bytes=10**9)
    model = Model(switch, page=1000, share=0.5, rng=random.Random(2))
    model.commit(20_000)
    switch.start(0, model.fanned)
    assert switch.armed_at is None  # 20,000 positions behind: beyond the queue's reach
    while switch.mode is Mode.CATCHUP:
        model.catchup_step(200)  # about 100 feed events arrive per read
        assert model.reads < 40
    # Pages of 1,000 over ~10,000 feed events, then one short page arms, one hands over.
    assert model.reads <= 13
    assert model.handover_distance is not None and model.handover_distance <= 300
    model.write_live()
    assert model.written == model.feed


def test_overflow_while_armed_disarms_then_rearms() -> None:
    switch = FeedSwitch(limit_items=10, limit_bytes=10**9)
    model = Model(switch, page=100, share=1.0, rng=random.Random(3))
    model.commit(5)
    switch.start(0, model.fanned)
    req = switch.next_read(model.fanned)
    assert (req.after, req.upto) == (0, 5)
    page = model.read(req)
    model.commit(11)  # more than the queue holds arrive during the read
    assert switch.armed_at is None and not switch.queue
    result = switch.page_read(req, page[-1], False, model.fanned)
    model.written += page
    assert not result.live and switch.armed_at == model.fanned  # re-armed at 16
    model.catchup_step(3)
    assert switch.mode is Mode.LIVE
    model.write_live()
    assert model.written == list(range(1, 20))


def test_slow_consumer_in_live_mode_falls_back_without_a_new_synced() -> None:
    switch = FeedSwitch(limit_items=4, limit_bytes=10**9)
    model = Model(switch, page=100, share=1.0, rng=random.Random(4))
    switch.start(0, 0)
    assert switch.page_read(switch.next_read(0), None, False, 0).synced == 0
    model.commit(5)  # never written: the queue overflows
    assert switch.mode is Mode.CATCHUP and switch.resyncs == 1
    model.written = []
    req = switch.next_read(model.fanned)
    assert (req.after, req.upto) == (0, 5)
    model.commit(2)
    result = switch.page_read(req, 5, False, model.fanned)
    assert not result.live and result.synced is None
    model.written += [1, 2, 3, 4, 5]
    model.catchup_step(0)
    assert switch.mode is Mode.LIVE
    model.write_live()
    assert model.written == list(range(1, 8))


def test_byte_bound_counts_like_the_item_bound() -> None:
    switch = FeedSwitch(limit_items=100, limit_bytes=20)
    switch.start(0, 0)
    switch.page_read(switch.next_read(0), None, False, 0)
    assert switch.offer(1, b"x" * 10)
    assert not switch.offer(2, b"x" * 10)
    assert switch.mode is Mode.LIVE
    assert switch.offer(3, b"x")  # 21 bytes: dropped, back to catch-up
    assert switch.mode is Mode.CATCHUP and switch.taken == 0 and not switch.queue
