"""Live ticket updates and war rooms over relaydesk's own messaging (BRIEF §2).

Theory of operation
-------------------
The ticket service calls every ``TicketListener`` (``desk/tickets/service.py``) after a
change has committed (never inside the transaction: a listener cannot undo or block it).  Two
listeners use the :class:`~relaydesk.desk.ports.Messaging` port:

* :class:`LiveNotices` posts a small JSON notice, ``{"type": "desk.ticket", "ticket": N}``,
  into channel ``desk-queue`` (agents' queue pages), ``desk-t-<N>`` (pages showing
  ticket N) and ``desk-org-<organisation>`` (that organisation's portal list).  The
  notice says *that* the ticket changed, never *what*: a customer who may watch
  ``desk-t-<N>`` learns nothing about internal notes from it; the page then fetches its
  fresh HTML through the console, which applies the viewer's permissions.
* :class:`WarRooms` opens channel ``desk-war-<N>`` when a ticket is created as, or raised
  to, P0/P1 while active, with the requester and the assigned and on-call agents as
  members, and posts one opening message.  War-room messages are channel messages, not
  ticket comments, so they never count as SLA responses.

Browser users are named in the messaging app as ``agent.<id>`` and ``customer.<id>``
(:func:`messaging_user`), so an agent and a contact with the same id never share a feed.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Final, Literal

import msgspec

from relaydesk.desk.escalation.notifiers import DESK_SENDER
from relaydesk.desk.escalation.routing import choose_on_call
from relaydesk.desk.ports import Messaging
from relaydesk.desk.tickets.model import ACTIVE_STATUSES, URGENT_PRIORITIES, Agent, Ticket
from relaydesk.desk.tickets.service import TicketChange
from relaydesk.protocol.tokens import NAME_RE

log = logging.getLogger("relaydesk.desk.live")

QUEUE_CHANNEL: Final = "desk-queue"
#: War rooms remembered as opened; past this the oldest is forgotten, which costs one
#: redundant (idempotent) ``ensure_channel`` if that ticket changes again.
_OPENED_MAX: Final = 10_000


def ticket_channel(ticket_id: int) -> str:
    """The channel that carries change notices of one ticket."""
    return f"desk-t-{ticket_id}"


def war_room_channel(ticket_id: int) -> str:
    """The war-room channel of an urgent ticket."""
    return f"desk-war-{ticket_id}"


def organisation_channel(organisation_id: str) -> str | None:
    """The channel that carries change notices of one organisation's tickets (the
    customer portal's live list); ``None`` if the id cannot name a channel."""
    name = f"desk-org-{organisation_id}"
    return name if NAME_RE.match(name) else None


def agents_channel(ticket_id: int) -> str:
    """Agents-only channel of one ticket: who is viewing and who is replying."""
    return f"desk-ta-{ticket_id}"


def messaging_user(kind: Literal["agent", "customer"], principal_id: str) -> str | None:
    """The messaging user id of a desk principal (``None`` if not a valid name)."""
    name = f"{kind}.{principal_id}"
    return name if NAME_RE.match(name) else None


class _Notice(msgspec.Struct, frozen=True):
    type: str
    ticket: int


class LiveNotices:
    """Posts "ticket N changed" into ``desk-queue``, ``desk-t-<N>`` and the
    organisation's ``desk-org-<id>`` (customer portal lists)."""

    def __init__(self, messaging: Messaging, app: str) -> None:
        self._messaging = messaging
        self._app = app

    async def ticket_changed(self, change: TicketChange) -> None:
        """Post the notice to both channels (privileged server-side publishes)."""
        tid = change.ticket.id
        body = msgspec.json.encode(_Notice(type="desk.ticket", ticket=tid))
        nonce = secrets.token_hex(6)
        org = organisation_channel(change.ticket.organisation_id)
        for channel in (QUEUE_CHANNEL, ticket_channel(tid), *([org] if org else [])):
            await self._messaging.post(
                self._app, DESK_SENDER, f"channel:{channel}", body, f"{channel}-{nonce}"
            )


class WarRooms:
    """Opens ``desk-war-<N>`` for active P0/P1 tickets."""

    def __init__(
        self,
        messaging: Messaging,
        app: str,
        agents: Callable[[], Awaitable[Sequence[Agent]]],
        now: Callable[[], datetime],
    ) -> None:
        self._messaging = messaging
        self._app = app
        self._agents = agents
        self._now = now
        self._opened: OrderedDict[int, None] = OrderedDict()

    @staticmethod
    def wanted(ticket: Ticket) -> bool:
        """Whether ``ticket`` should have a war room now."""
        return ticket.priority in URGENT_PRIORITIES and ticket.status in ACTIVE_STATUSES

    async def members(self, ticket: Ticket) -> list[str]:
        """Requester, assignee and the agent on call now (messaging user ids)."""
        agents = await self._agents()
        oncall = choose_on_call(agents, ticket.skills, ticket.assignee_id, self._now())
        names = [
            messaging_user("customer", ticket.requester_id),
            *(messaging_user("agent", a) for a in (ticket.assignee_id, oncall) if a),
        ]
        return list(dict.fromkeys(n for n in names if n is not None))

    async def ticket_changed(self, change: TicketChange) -> None:
        """Open the war room the first time an urgent active ticket is seen."""
        ticket = change.ticket
        if not self.wanted(ticket) or ticket.id in self._opened:
            return
        channel = war_room_channel(ticket.id)
        await self._messaging.ensure_channel(
            self._app, channel, [DESK_SENDER, *await self.members(ticket)]
        )
        text = f"War room for ticket #{ticket.id} ({ticket.priority}): {ticket.subject}"
        await self._messaging.post(
            self._app, DESK_SENDER, f"channel:{channel}", text.encode(), f"{channel}-opened"
        )
        self._opened[ticket.id] = None
        while len(self._opened) > _OPENED_MAX:
            self._opened.popitem(last=False)
