"""The agent workspace against real databases (SQLite and PostgreSQL): search, views and
the at-risk state, macros, bulk, merge, links, mentions, ratings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from desk_testkit import ALICE, BOB, DANA, FRANK

from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.desk.workspace import Macro, Mention
from relaydesk.storage.desk import TicketInsert, to_ms
from relaydesk.storage.engine import Database
from relaydesk.storage.workspace import ViewQuery


async def _ticket(desk: DeskComponent, who=DANA, **kw: object) -> int:  # type: ignore[no-untyped-def]
    fields = {"subject": "Messages lost", "priority": "P2", **kw}
    if who.kind == "agent":
        fields.setdefault("requester_id", "dana")
    t = await desk.tickets.create_ticket(who, NewTicket(**fields))  # type: ignore[arg-type]
    return t.id


async def test_search_finds_subject_comments_people_and_hides_internal_notes(
    desk: DeskComponent,
) -> None:
    ws = desk.workspace
    a = await _ticket(desk, subject="Android delivery delayed in eu-west")
    b = await _ticket(desk, FRANK, subject="Dashboard blank")
    await desk.tickets.add_comment(DANA, a, "Our Kotlin client reconnects constantly")
    await desk.tickets.add_comment(ALICE, a, "suspect the flamingo node", public=False)
    await desk.tickets.add_comment(FRANK, b, "the websocket handshake times out")

    # Stemming: "delays" finds "delayed"; all words must match.
    hits = await ws.search(ALICE, "delays android")
    assert [r.ticket.id for r in hits.rows] == [a] and hits.total == 1
    assert [r.ticket.id for r in (await ws.search(ALICE, "kotlin reconnects")).rows] == [a]
    # Requester and organisation names are searchable.
    assert [r.ticket.id for r in (await ws.search(ALICE, "globex")).rows] == [b]
    assert [r.ticket.id for r in (await ws.search(ALICE, "frank")).rows] == [b]
    # Agents find internal notes, with a marked snippet; customers never do.
    agent_hit = (await ws.search(ALICE, "flamingo")).rows
    assert [r.ticket.id for r in agent_hit] == [a]
    assert "<mark>flamingo</mark>" in agent_hit[0].snippet_html
    assert (await ws.search(DANA, "flamingo")).total == 0
    # Customers see only their organisation's tickets.
    assert (await ws.search(DANA, "websocket handshake")).total == 0
    assert [r.ticket.id for r in (await ws.search(FRANK, "websocket")).rows] == [b]
    # A later change is indexed at the next search; "#id" finds the ticket; junk is empty.
    await desk.tickets.add_comment(DANA, a, "also seen with pelicans")
    assert [r.ticket.id for r in (await ws.search(ALICE, "pelican")).rows] == [a]
    assert [r.ticket.id for r in (await ws.search(ALICE, f"#{b}")).rows] == [b]
    assert (await ws.search(DANA, f"#{b}")).total == 0
    assert (await ws.search(ALICE, '"); DROP TABLE --')).total == 0


async def test_views_at_risk_breached_counts_and_sorting(
    desk: DeskComponent, desk_clock: FakeClock
) -> None:
    ws = desk.workspace
    # Default policy, P0: first response 15 min; the warning at warn_fraction (0.75).
    p0 = await _ticket(desk, subject="Outage", priority="P0")
    p3 = await _ticket(desk, subject="Question", priority="P3")
    await desk.tickets.assign(ALICE, p3, "alice")
    page = await ws.view(ALICE, ViewQuery(view="all"))
    badges = {r.ticket.id: r.badge for r in page.rows}
    assert badges == {p0: "active", p3: "active"}
    assert [r.ticket.id for r in page.rows] == [p0, p3]  # by due: P0 first

    desk_clock.advance(12 * 60)  # past 75 % of 15 min, before the target
    page = await ws.view(ALICE, ViewQuery(view="at_risk"))
    assert [r.ticket.id for r in page.rows] == [p0] and page.rows[0].badge == "at_risk"
    counts = await ws.counts(ALICE)
    assert counts["at_risk"] == 1 and counts["breached"] == 0
    assert counts["mine"] == 1 and counts["unassigned"] == 1 and counts["all"] == 2

    desk_clock.advance(5 * 60)  # past the target: breached, even before the scheduler runs
    assert [r.ticket.id for r in (await ws.view(ALICE, ViewQuery(view="breached"))).rows] == [p0]
    assert (await ws.counts(ALICE))["at_risk"] == 0
    assert [r.ticket.id for r in (await ws.view(BOB, ViewQuery(view="mine"))).rows] == []

    # Sort and page.
    ids = [await _ticket(desk, subject=f"bulk {i}") for i in range(3)]
    newest = await ws.view(ALICE, ViewQuery(view="all", sort="created", descending=True, limit=2))
    assert newest.total == 5 and [r.ticket.id for r in newest.rows] == [ids[2], ids[1]]
    second = await ws.view(
        ALICE, ViewQuery(view="all", sort="created", descending=True, limit=2, offset=2)
    )
    assert [r.ticket.id for r in second.rows] == [ids[0], p3]
    # Customers: their organisation only, no agent views.
    mine = await ws.view(FRANK, ViewQuery(view="all"))
    assert mine.total == 0
    with pytest.raises(DeskError) as err:
        await ws.view(DANA, ViewQuery(view="at_risk"))
    assert err.value.code == "auth.forbidden"
    saved = await ws.save_view(ALICE, "Urgent acme", "view=all&priority=P0&organisation=acme")
    assert [v.name for v in await ws.saved_views(ALICE)] == ["Urgent acme"]
    assert await ws.saved_views(BOB) == []
    await ws.delete_view(ALICE, saved.id)
    with pytest.raises(DeskError):
        await ws.delete_view(ALICE, saved.id)


async def test_macro_bulk_merge_links(desk: DeskComponent) -> None:
    ws = desk.workspace
    a = await _ticket(desk, subject="Login fails")
    b = await _ticket(desk, subject="Login fails again")
    c = await _ticket(desk, FRANK, subject="Other org")
    macro = await ws.put_macro(
        ALICE,
        Macro(
            id=0,
            name="Need logs",
            body="Hi {requester}, please attach a doctor report for #{ticket}.",
            status="pending",
        ),
    )
    t = await ws.apply_macro(ALICE, a, macro.id)
    assert t.status == "pending"
    detail = await desk.tickets.detail(DANA, a)
    assert detail.comments[-1].body == f"Hi Dana, please attach a doctor report for #{a}."
    with pytest.raises(DeskError):
        await ws.apply_macro(DANA, a, macro.id)

    results = await ws.bulk(ALICE, [a, b, c, 999_999], priority="P1", assignee_id="bob")
    assert [(r.ticket_id, r.ok) for r in results] == [
        (a, True),
        (b, True),
        (c, True),
        (999_999, False),
    ]
    assert results[-1].error == "ticket.not_found"

    with pytest.raises(DeskError) as err:
        await ws.merge(ALICE, b, c)
    assert err.value.code == "ticket.merge_invalid"
    target = await ws.merge(ALICE, b, a)
    assert target.id == a
    src = (await desk.tickets.detail(DANA, b)).ticket
    assert src.status == "closed"
    notes = (await desk.tickets.detail(ALICE, a)).comments
    assert notes[-1].public is False and f"Merged from #{b}" in notes[-1].body
    assert [(lk.ticket_id, lk.kind) for lk in await ws.links(DANA, a)] == [(b, "merged_into")]
    await ws.link(ALICE, a, c)
    assert (c, "related") in [(lk.ticket_id, lk.kind) for lk in await ws.links(ALICE, a)]
    # The customer of acme does not learn about globex's ticket through a link.
    assert c not in [lk.ticket_id for lk in await ws.links(DANA, a)]


async def test_mentions_are_recorded_and_hooked(desk: DeskComponent) -> None:
    seen: list[Mention] = []

    class Hook:
        async def mentioned(self, mention: Mention) -> None:
            seen.append(mention)

    desk.workspace.add_mention_hook(Hook())
    a = await _ticket(desk)
    await desk.tickets.add_comment(
        ALICE, a, "@bob can you check? cc @nobody and me@alice", public=False
    )
    await desk.tickets.add_comment(ALICE, a, "public text naming @bob is not a mention")
    assert [(m.agent_id, m.by_agent_id, m.ticket_id) for m in seen] == [("bob", "alice", a)]
    page = await desk.workspace.view(BOB, ViewQuery(view="mentions"))
    assert [r.ticket.id for r in page.rows] == [a]
    assert (await desk.workspace.counts(BOB))["mentions"] == 1


async def test_csat_only_after_solve_and_reported(
    desk: DeskComponent, desk_clock: FakeClock
) -> None:
    ws = desk.workspace
    a = await _ticket(desk)
    with pytest.raises(DeskError) as err:
        await ws.rate(DANA, a, "good")
    assert err.value.code == "csat.not_solved"
    await desk.tickets.change_status(ALICE, a, "solved")
    with pytest.raises(DeskError):
        await ws.rate(FRANK, a, "good")  # another organisation: not found
    with pytest.raises(DeskError):
        await ws.rate(ALICE, a, "good")
    await ws.rate(DANA, a, "bad", "slow")
    await ws.rate(DANA, a, "good", "fixed after all")
    assert (await ws.rating(DANA, a) or {})["rating"] == "good"
    now = desk.tickets.now()
    report = await ws.csat(now - timedelta(days=1), now + timedelta(days=1))
    assert report == {"good": 1, "bad": 0, "score_pct": 100.0}


async def test_index_catches_up_in_batches_even_within_one_millisecond(
    desk: DeskComponent, desk_db: Database
) -> None:
    at = to_ms(desk.tickets.now())
    rows = [
        TicketInsert(
            organisation_id="acme",
            requester_id="dana",
            assignee_id=None,
            subject=f"imported ticket {i}" + (" zebra" if i % 100 == 7 else ""),
            description="",
            priority="P3",
            status="open",
            skills=(),
            tags=(),
            app_id=None,
            region=None,
            window_start=None,
            window_end=None,
            policy_id="default",
            policy_version=1,
            created_at=at,  # all in one millisecond, more than one batch
        )
        for i in range(1_200)
    ]
    await desk_db.write(lambda tx: desk.store.bulk_insert_tickets(tx, rows))
    assert await desk.workspace.refresh_index() == 1_200
    assert (await desk.workspace.search(ALICE, "zebra")).total == 12
    assert await desk.workspace.refresh_index() == 0  # nothing left, nothing repeated
