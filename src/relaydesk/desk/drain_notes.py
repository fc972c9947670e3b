"""Write an automatic drain or undrain to the tickets whose diagnosis asked for it.

The automatic acknowledgement's internal note carries a ``node_outlier`` or
``node_victims`` finding's command (``relaydesk node drain NODE --reason …``); when the
automatic drain (``server/directory.py::AutoDrainer``) later drains or undrains NODE,
each active ticket of the last day whose automation note names that command gets an
internal note saying what was done, when and why, so the agent working it sees the
action taken without reading the audit log.  The audit log keeps every change anyway.
"""

from __future__ import annotations

from typing import Final

from relaydesk.clock import Clock
from relaydesk.desk.tickets.model import TicketFilter
from relaydesk.desk.tickets.service import TicketService
from relaydesk.edges.autodrain import Decision
from relaydesk.storage.desk import to_ms
from relaydesk.storage.engine import Database, Tx

#: Tickets filed this long ago or less can have triggered a drain (a diagnosis is about
#: the recent window; an older ticket's node may long have been drained and undrained).
LOOKBACK_MS: Final = 24 * 3600 * 1000
#: Active tickets looked at per decision: drains are rare, this bounds the reads.
MAX_TICKETS: Final = 200


def drain_marker(node: str) -> str:
    """The text an automation note holds when its diagnosis recommends draining ``node``
    (``desk.diagnosis.rules.network.drain_command``)."""
    return f"relaydesk node drain {node} "


class DrainNotes:
    """``record(decision)``: note ``decision`` on the tickets that recommended it."""

    def __init__(self, db: Database, tickets: TicketService, clock: Clock) -> None:
        self._db = db
        self._tickets = tickets
        self._clock = clock

    def _asking(self, tx: Tx, node: str, since_ms: int) -> list[int]:
        store = self._tickets.store
        marker = drain_marker(node)
        out = []
        for t in store.list_tickets(tx, TicketFilter(active_only=True, limit=MAX_TICKETS)):
            if to_ms(t.created_at) < since_ms:
                continue
            notes = store.comments(tx, t.id, public_only=False)
            if any(c.author_kind == "automation" and marker in c.body for c in notes):
                out.append(t.id)
        return sorted(out)

    async def record(self, decision: Decision) -> list[int]:
        """Add an internal note to each ticket that asked for this; their ids."""
        now_ms = int(self._clock.time() * 1000)
        node = decision.node_id
        ids = await self._db.read(lambda tx: self._asking(tx, node, now_ms - LOOKBACK_MS))
        verb = "drained" if decision.action == "drain" else "undrained"
        undo = "undrain" if decision.action == "drain" else "drain"
        body = (
            f"Automatic {decision.action}: node {node} was {verb} by the automatic drain "
            f"(`[cluster] auto_drain`): {decision.reason}. Its clients "
            + (
                "move to the next node of their directory list; it is undrained on "
                "probation after a cool-off."
                if decision.action == "drain"
                else "may come back; it is drained again if it is still worse than its siblings."
            )
            + f" Undo by hand with `relaydesk node {undo} {node}`."
        )
        for ticket_id in ids:
            await self._tickets.add_automation_comment(ticket_id, body, public=False)
        return ids
