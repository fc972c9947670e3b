"""Desk benchmark: SLA computation throughput and agent-queue latency on SQLite.

* **SLA**: ``compute_sla`` over N tickets (100,000; 10,000 with ``quick``) with realistic
  histories on the default policy (business-hours calendar, Europe/London): creation over
  two months, automated acknowledgements, agent replies, customer follow-ups, pauses while
  pending, priority changes and solves.  Reports tickets per second.
* **SLA board**: the same tickets kept current by ``SlaBoard`` (desk/sla/board.py): a
  cold refresh, then refreshes a minute apart with 1 % of the tickets changed each time;
  tickets per second of a steady refresh, and its ratio to the full recompute above.
* **Queue**: 100,000 open tickets (10,000 with ``quick``) bulk-inserted through
  ``DeskStore``; the first page (50) of the agent queue, of one agent's queue and of a
  keyset-paged later page, timed over many runs.  Reports p50/p99 in milliseconds.

Run: ``python -m bench.desk [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relaydesk.desk.sla import SlaEvent, compute_sla, default_calendars, default_policy
from relaydesk.desk.sla.board import SlaBoard
from relaydesk.storage.desk import DESK_MIGRATIONS, DeskStore, TicketInsert, to_ms
from relaydesk.storage.engine import open_database

_PRIORITIES = (("P0", 0.05), ("P1", 0.15), ("P2", 0.5), ("P3", 0.3))


def _priority(rng: random.Random) -> str:
    x = rng.random()
    for p, w in _PRIORITIES:
        if x < w:
            return p
        x -= w
    return "P3"


def ticket_history(rng: random.Random, start: datetime, span_days: int) -> list[SlaEvent]:
    """One plausible ticket log: 3-12 events over hours to days."""
    t = start + timedelta(seconds=rng.randrange(span_days * 86400))
    prio = _priority(rng)
    events = [SlaEvent(at=t, kind="created", priority=prio, status="new")]
    if rng.random() < 0.7:
        t += timedelta(seconds=rng.randrange(5, 60))
        events.append(SlaEvent(at=t, kind="comment", author_role="automation", public=True))
    if rng.random() < 0.1:
        t += timedelta(minutes=rng.randrange(1, 120))
        events.append(SlaEvent(at=t, kind="priority_changed", priority=_priority(rng)))
    for i in range(rng.randrange(1, 4)):
        # Most first replies land within the business day; follow-ups take longer.
        t += timedelta(minutes=rng.randrange(5, 240 if i == 0 else 60 * 24))
        events.append(SlaEvent(at=t, kind="comment", author_role="agent", public=True))
        if rng.random() < 0.3:
            events.append(SlaEvent(at=t, kind="status_changed", status="pending"))
            t += timedelta(minutes=rng.randrange(30, 60 * 48))
            events.append(SlaEvent(at=t, kind="comment", author_role="customer", public=True))
            events.append(SlaEvent(at=t, kind="status_changed", status="open"))
        elif rng.random() < 0.4:
            t += timedelta(minutes=rng.randrange(10, 60 * 24))
            events.append(SlaEvent(at=t, kind="comment", author_role="customer", public=True))
    if rng.random() < 0.6:
        t += timedelta(minutes=rng.randrange(10, 60 * 72))
        events.append(SlaEvent(at=t, kind="status_changed", status="solved"))
    return events


def bench_sla(n: int, seed: int = 7) -> dict[str, Any]:
    """Compute SLA status for ``n`` generated tickets; tickets per second."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 8, tzinfo=UTC)
    histories = [ticket_history(rng, start, 60) for _ in range(n)]
    now = start + timedelta(days=75)
    policy, calendars = default_policy(), default_calendars()
    events_total = sum(len(h) for h in histories)
    breached = 0
    t0 = time.perf_counter()
    for h in histories:
        sla = compute_sla(policy, calendars, h, now)
        breached += any(m.state == "breached" for m in sla.metrics)
    elapsed = time.perf_counter() - t0
    return {
        "tickets": n,
        "events": events_total,
        "seconds": round(elapsed, 3),
        "tickets_per_s": round(n / elapsed, 1),
        "breached_share": round(breached / n, 3),
    }


def bench_sla_board(
    n: int, seed: int = 7, ticks: int = 10, changed: float = 0.01
) -> dict[str, Any]:
    """SLA status of ``n`` tickets kept current by ``SlaBoard``: one cold refresh (every
    ticket through the engine), then ``ticks`` refreshes a minute apart in which a share
    ``changed`` of the tickets get a new agent reply.  Tickets per second of a steady
    refresh is ``n`` over its time: every ticket's status is current afterwards."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 8, tzinfo=UTC)
    logs = [ticket_history(rng, start, 60) for _ in range(n)]
    now = start + timedelta(days=75)
    policy = default_policy()
    board = SlaBoard(default_calendars())
    for tid, events in enumerate(logs):
        board.update(tid, events, policy)
    t0 = time.perf_counter()
    board.refresh(now)
    cold = time.perf_counter() - t0
    times: list[float] = []
    recomputed: list[int] = []
    for _ in range(ticks):
        now += timedelta(minutes=1)
        for tid in rng.sample(range(n), int(n * changed)):
            logs[tid] = [*logs[tid], SlaEvent(at=now, kind="comment", author_role="agent")]
            board.update(tid, logs[tid], policy)
        t0 = time.perf_counter()
        recomputed.append(len(board.refresh(now)))
        times.append(time.perf_counter() - t0)
    steady = sum(times) / len(times)
    breached = sum(1 for _, st in board.statuses() if st.state == "breached")
    return {
        "tickets": n,
        "cold_refresh_s": round(cold, 3),
        "cold_tickets_per_s": round(n / cold, 1),
        "changed_per_tick": int(n * changed),
        "recomputed_per_tick_mean": round(sum(recomputed) / len(recomputed), 1),
        "steady_refresh_ms_mean": round(steady * 1000, 2),
        "steady_refresh_ms_max": round(max(times) * 1000, 2),
        "tickets_per_s": round(n / steady, 1),
        "breached_share": round(breached / n, 3),
    }


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def bench_queue(n: int, runs: int = 500, seed: int = 11) -> dict[str, Any]:
    """p50/p99 of the agent-queue query with ``n`` open tickets on SQLite."""
    rng = random.Random(seed)
    store = DeskStore()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database("sqlite:///" + str(Path(tmp) / "bench.db"), sync="normal")
        try:
            db.migrate("desk", DESK_MIGRATIONS)
            agents = [f"agent{i}" for i in range(20)]

            def people(tx: Any) -> None:
                tx.execute("INSERT INTO desk_plans VALUES ('std', 'Standard', 'default')")
                tx.executemany(
                    "INSERT INTO desk_agents VALUES (?, ?, '', '[]', '[]', 1)",
                    [(a, a) for a in agents],
                )
                tx.execute("INSERT INTO desk_organisations VALUES ('org', 'Org', 'std', NULL)")
                tx.execute("INSERT INTO desk_contacts VALUES ('c', 'org', 'C', '')")

            db.write_sync(people)
            base = to_ms(datetime(2024, 3, 4, tzinfo=UTC))
            rows = [
                TicketInsert(
                    organisation_id="org",
                    requester_id="c",
                    assignee_id=rng.choice(agents),
                    subject=f"ticket {i}",
                    description="",
                    priority=_priority(rng),
                    status="open",
                    skills=(),
                    tags=(),
                    app_id=None,
                    region=None,
                    window_start=None,
                    window_end=None,
                    policy_id="default",
                    policy_version=1,
                    created_at=base,
                    sla_state="active",
                    due_at=None if rng.random() < 0.1 else base + rng.randrange(14 * 86_400_000),
                )
                for i in range(n)
            ]
            t0 = time.perf_counter()
            for lo in range(0, n, 10_000):
                chunk = rows[lo : lo + 10_000]
                db.write_sync(lambda tx, c=chunk: store.bulk_insert_tickets(tx, c))
            insert_s = time.perf_counter() - t0

            def timed(fn: Any) -> list[float]:
                out = []
                for _ in range(runs):
                    s = time.perf_counter()
                    db.read_sync(fn)
                    out.append((time.perf_counter() - s) * 1000)
                return out

            first = timed(lambda tx: store.queue(tx, limit=50))
            mine = timed(lambda tx: store.queue(tx, limit=50, assignee_id="agent3"))
            mid = base + 7 * 86_400_000
            later = timed(lambda tx: store.queue(tx, limit=50, after=(mid, 0)))
        finally:
            db.close_sync()
    return {
        "open_tickets": n,
        "insert_s": round(insert_s, 2),
        "runs": runs,
        "queue_p50_ms": round(_pct(first, 50), 3),
        "queue_p99_ms": round(_pct(first, 99), 3),
        "agent_queue_p99_ms": round(_pct(mine, 99), 3),
        "later_page_p99_ms": round(_pct(later, 99), 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The desk benchmarks; sizes drop tenfold with ``quick``.  ``sla`` (every ticket
    through the engine) is the peer of ``sla_board`` (statuses kept current): their ratio
    is measured in the same run under the same load."""
    n = 10_000 if quick else 100_000
    sla = bench_sla(n)
    board = bench_sla_board(n)
    board["vs_full_recompute"] = round(board["tickets_per_s"] / sla["tickets_per_s"], 1)
    return {"sla": sla, "sla_board": board, "queue": bench_queue(n)}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
