"""Two nodes changing one ticket at the same time (PostgreSQL; a cluster's desk API).

Each node has its own connection, so their write transactions really overlap.  A
ticket change reads the ticket and its log, then appends to the log: without the row
lock two overlapping changes read the same state and one of them fails (both take the
same log sequence number) or works from a stale ticket.
"""

from __future__ import annotations

import asyncio

import pytest
from desk_testkit import ALICE, DANA, desk_settings, seed_people

from pg import pg_schema
from relaydesk.clock import FakeClock
from relaydesk.desk.component import open_desk
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.storage import open_database

pytestmark = pytest.mark.services


async def test_overlapping_changes_of_one_ticket_from_two_nodes_all_land(
    desk_clock: FakeClock,
) -> None:
    with pg_schema() as url:
        db_a, db_b = open_database(url), open_database(url)
        try:
            node_a = open_desk(db_a, desk_settings(auto_assign=False), desk_clock, None)
            seed_people(node_a.tickets, db_a)
            node_b = open_desk(db_b, desk_settings(auto_assign=False), desk_clock, None)
            ticket = await node_a.tickets.create_ticket(
                DANA, NewTicket(subject="both nodes", priority="P2")
            )

            async def comments(node: object, who: str) -> None:
                for i in range(25):
                    await node.tickets.add_comment(ALICE, ticket.id, f"{who} {i}")  # type: ignore[attr-defined]

            await asyncio.gather(comments(node_a, "a"), comments(node_b, "b"))
            detail = await node_b.tickets.detail(ALICE, ticket.id)
            bodies = [c.body for c in detail.comments]
            assert sorted(bodies) == sorted(
                [f"a {i}" for i in range(25)] + [f"b {i}" for i in range(25)]
            )
            seqs = [e.seq for e in detail.events]
            assert seqs == list(range(1, len(seqs) + 1))
        finally:
            db_a.close_sync()
            db_b.close_sync()
