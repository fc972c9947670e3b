"""Ticket status transitions: the whole state machine in one table (h11 style).

Theory of operation
-------------------
``new`` is a ticket nobody has answered.  ``open`` is being worked.  ``pending`` waits on
the customer and ``on_hold`` on a third party (both may pause SLA clocks, per policy).
``solved`` may be re-opened; ``closed`` is final: a customer writing again opens a new
ticket, so a closed ticket never goes back to ``pending`` or anywhere else.

Besides explicit changes, two implicit ones happen on comments (Zendesk semantics):

* a public reply by a human agent moves ``new`` to ``open``;
* a customer comment moves ``pending`` or ``solved`` back to ``open`` (it re-opens a
  solved ticket, which the SLA engine treats per the policy's ``reopen_mode``).
"""

from __future__ import annotations

from typing import Final

from relaydesk.desk.tickets.model import ActorKind, Status

TRANSITIONS: Final[dict[Status, frozenset[Status]]] = {
    "new": frozenset({"open", "pending", "on_hold", "solved"}),
    "open": frozenset({"pending", "on_hold", "solved"}),
    "pending": frozenset({"open", "on_hold", "solved"}),
    "on_hold": frozenset({"open", "pending", "solved"}),
    "solved": frozenset({"open", "closed"}),
    "closed": frozenset(),
}


def can_transition(current: Status, target: Status) -> bool:
    """Whether an explicit change from ``current`` to ``target`` is allowed."""
    return target in TRANSITIONS[current]


def status_after_comment(current: Status, author: ActorKind, public: bool) -> Status | None:
    """The implicit status change a comment causes, or ``None`` for none."""
    if author == "agent" and public and current == "new":
        return "open"
    if author == "customer" and current in ("pending", "solved"):
        return "open"
    return None
