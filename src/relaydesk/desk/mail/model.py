"""E-mail notifications: what happened, who is told, how (pure; no I/O, no clock).

Theory of operation
-------------------
Five things are mailed (``MailKind``): a new public **reply** (an agent's to the
requester, a customer's to the assigned agent), an **assignment** (to the new assignee),
an **escalation** (a page or a breach notice, to the agent paged), **at risk** (an SLA
warning, to the assignee) and a **mention** (an agent named as ``@id`` in another agent's
internal note, from the workspace's mention hook).  Each person's :class:`MailPreferences`
says per kind ``instant`` (one mail now), ``digest`` (collected, one mail per digest
interval) or ``off``.  :func:`route` applies them; :class:`DigestBox` keeps the collected
items, at most :data:`DIGEST_MAX_ITEMS` per person (older ones are dropped and counted: a
digest of hundreds of lines is unread anyway), and hands out the digests that are due at
``now``.
Rendering is ``templates.py``; sending is ``sender.py``; the desk's hooks are
``notifications.py``.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec

MailKind = Literal["reply", "assignment", "escalation", "at_risk", "mention"]
Delivery = Literal["instant", "digest", "off"]
PersonKind = Literal["agent", "customer"]
MAIL_KINDS: Final[tuple[MailKind, ...]] = (
    "reply",
    "assignment",
    "escalation",
    "at_risk",
    "mention",
)
#: Items one person's digest holds; beyond it the oldest go (counted in ``dropped``).
DIGEST_MAX_ITEMS: Final = 200


class MailPreferences(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one person wants each kind of mail; the defaults mail everything at once,
    except at-risk warnings, which agents get in a digest."""

    reply: Delivery = "instant"
    assignment: Delivery = "instant"
    escalation: Delivery = "instant"
    at_risk: Delivery = "digest"
    mention: Delivery = "instant"

    def delivery(self, kind: MailKind) -> Delivery:
        value: Delivery = getattr(self, kind)
        return value


class Recipient(msgspec.Struct, frozen=True):
    """A person with an address."""

    kind: PersonKind
    id: str
    name: str
    email: str


class MailItem(msgspec.Struct, frozen=True):
    """One thing to tell one person about one ticket."""

    kind: MailKind
    ticket_id: int
    ticket_subject: str
    priority: str
    at: datetime
    text: str  # what happened, in one or a few lines (a reply's body, a notice's text)
    author: str = ""  # who wrote the reply (``reply``) or the note (``mention``)
    key: str = ""  # idempotency: the same key is mailed once


def route(item: MailItem, recipient: Recipient, prefs: MailPreferences) -> Delivery:
    """``instant``, ``digest`` or ``off`` for ``item`` to ``recipient``; no address: off."""
    if not recipient.email:
        return "off"
    return prefs.delivery(item.kind)


class _Pending(msgspec.Struct):
    recipient: Recipient
    items: deque[MailItem]
    due: datetime
    dropped: int = 0


class DueDigest(msgspec.Struct, frozen=True):
    recipient: Recipient
    items: list[MailItem]
    dropped: int


class DigestBox:
    """Collected digest items per person; a person's digest is due ``interval`` after
    their first collected item (so a quiet person gets none)."""

    def __init__(self, interval: timedelta) -> None:
        if interval <= timedelta(0):
            raise ValueError("the digest interval must be positive")
        self._interval = interval
        self._pending: dict[tuple[str, str], _Pending] = {}

    def add(self, recipient: Recipient, item: MailItem) -> None:
        key = (recipient.kind, recipient.id)
        box = self._pending.get(key)
        if box is None:
            box = self._pending[key] = _Pending(
                recipient=recipient, items=deque(), due=item.at + self._interval
            )
        if len(box.items) >= DIGEST_MAX_ITEMS:
            box.items.popleft()
            box.dropped += 1
        box.items.append(item)

    def due(self, now: datetime) -> list[DueDigest]:
        """Take the digests due at ``now`` out of the box."""
        out: list[DueDigest] = []
        for key in [k for k, b in self._pending.items() if b.due <= now]:
            box = self._pending.pop(key)
            out.append(DueDigest(box.recipient, list(box.items), box.dropped))
        return out

    def __len__(self) -> int:
        return sum(len(b.items) for b in self._pending.values())
