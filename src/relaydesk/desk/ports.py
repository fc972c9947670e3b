"""What the desk needs from the rest of relaydesk (STYLE rule 6: service interfaces only).

The composition root implements :class:`Messaging` over the messaging hub; unit tests use
an in-memory fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Messaging(Protocol):
    """Posting into relaydesk conversations on behalf of the desk."""

    async def post(self, app: str, sender: str, to: str, body: bytes, client_id: str) -> None:
        """Send ``body`` from ``sender`` to ``to`` (``channel:NAME`` or ``user:NAME``).

        Idempotent on ``client_id``: posting the same id twice delivers one message.
        """
        ...

    async def ensure_channel(self, app: str, channel: str, members: Sequence[str]) -> str:
        """Create ``channel`` if needed, add ``members``; return the conversation id."""
        ...
