"""SlaBoard against the pure engine: at every instant, for every ticket, the board's status
is what ``compute_sla`` says, though the board recomputes only a few tickets a tick."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from bench.desk import ticket_history

from relaydesk.desk.sla import SlaEvent, compute_sla, default_calendars, default_policy
from relaydesk.desk.sla.board import SlaBoard, sla_status

START = datetime(2024, 1, 8, tzinfo=UTC)


def _reference(events: list[SlaEvent], now: datetime) -> object:
    policy, calendars = default_policy(), default_calendars()
    return sla_status(compute_sla(policy, calendars, events, now), now)


@pytest.mark.parametrize("seed", [1, 2])
def test_board_matches_the_engine_at_every_tick(seed: int) -> None:
    rng = random.Random(seed)
    policy = default_policy()
    # Histories whose events spread over the run: many are still in the future at first,
    # so future-dated events, warnings and breaches all come due while the board runs.
    logs = {tid: ticket_history(rng, START, 3) for tid in range(120)}
    board = SlaBoard(default_calendars())
    for tid, events in logs.items():
        board.update(tid, events, policy)
    now = START + timedelta(days=3)
    recomputed_total = 0
    for tick in range(30):
        if tick % 5 == 4:  # an agent answers a few tickets: their logs change
            for tid in rng.sample(sorted(logs), 5):
                logs[tid] = [*logs[tid], SlaEvent(at=now, kind="comment", author_role="agent")]
                board.update(tid, logs[tid], policy)
        recomputed = board.refresh(now)
        recomputed_total += len(recomputed)
        for tid, events in logs.items():
            assert board.status(tid) == _reference(events, now), (tid, now)
        now += timedelta(minutes=rng.choice([1, 7, 30, 180, 600]))
    # the point of the board: far fewer engine runs than tickets x ticks
    assert recomputed_total < 0.5 * len(logs) * 30
    assert board.statistics().computed == recomputed_total


def test_exact_instants_of_a_target_and_a_future_event() -> None:
    policy = default_policy()
    created = datetime(2024, 1, 8, 9, tzinfo=UTC)  # Monday, business hours in London
    events = [SlaEvent(at=created, kind="created", priority="P0", status="new")]
    sla = compute_sla(policy, default_calendars(), events, created)
    target = sla.metrics[0].target_at
    assert target is not None
    later = [*events, SlaEvent(at=target + timedelta(hours=1), kind="comment", author_role="agent")]
    board = SlaBoard(default_calendars())
    board.update(1, later, policy)
    for at in (created, target, target + timedelta(microseconds=1), target + timedelta(hours=1)):
        board.refresh(at)
        assert board.status(1) == _reference(later, at), at
    status = board.status(1)
    assert status is not None and status.state == "breached"


def test_now_may_not_go_backwards_and_removed_tickets_go() -> None:
    board = SlaBoard(default_calendars())
    board.update(1, [SlaEvent(at=START, kind="created", priority="P2")], default_policy())
    board.refresh(START + timedelta(hours=1))
    with pytest.raises(ValueError, match="before the last one"):
        board.refresh(START)
    # a log the engine refuses: no status, the reason listed, the others unaffected
    board.update(2, [SlaEvent(at=START, kind="comment", author_role="agent")], default_policy())
    assert board.refresh(START + timedelta(hours=2)) == [2]
    assert board.status(2) is None and board.errors() == {
        2: "case.bad_event: comment event before the created event"
    }
    assert board.status(1) is not None
    board.remove(1)
    board.remove(2)
    assert board.status(1) is None and len(board) == 0
    assert board.refresh(START + timedelta(days=30)) == []
