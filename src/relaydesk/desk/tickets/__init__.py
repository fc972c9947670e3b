"""Tickets: the model, the error codes and the status table.

The service lives in :mod:`relaydesk.desk.tickets.service` and is not re-exported here:
the desk store imports this package's model, and the service imports the store.
"""

from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import (
    PRIORITIES,
    STATUSES,
    Agent,
    Comment,
    Contact,
    NewTicket,
    OnCallShift,
    Organisation,
    Plan,
    Principal,
    Priority,
    Status,
    Ticket,
    TicketEvent,
    TicketFilter,
)
from relaydesk.desk.tickets.transitions import TRANSITIONS, can_transition

__all__ = [
    "PRIORITIES",
    "STATUSES",
    "TRANSITIONS",
    "Agent",
    "Comment",
    "Contact",
    "DeskError",
    "DeskErrorCode",
    "NewTicket",
    "OnCallShift",
    "Organisation",
    "Plan",
    "Principal",
    "Priority",
    "Status",
    "Ticket",
    "TicketEvent",
    "TicketFilter",
    "can_transition",
]
