"""Bounds of what storage can hold, for the layers that validate input above it."""

from __future__ import annotations

from typing import Final

#: The largest integer both SQLite ``INTEGER`` and PostgreSQL ``BIGINT`` store.  Ids,
#: positions and sequence numbers from a request are bounded by it before any query
#: (a larger one made the SQLite driver raise ``OverflowError``: HTTP 500).
MAX_ROW_ID: Final = 2**63 - 1
