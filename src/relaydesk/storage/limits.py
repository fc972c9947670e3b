"""Bounds of what storage can hold, for the layers that validate input above it."""

from __future__ import annotations

from typing import Final

#: The largest integer both SQLite ``INTEGER`` and PostgreSQL ``BIGINT`` store.  A larger
#: one made the SQLite driver raise ``OverflowError`` (HTTP 500).
MAX_ROW_ID: Final = 2**63 - 1

#: The largest id, position or sequence number a request may carry.  Below
#: :data:`MAX_ROW_ID`, and exactly representable as a double, so the OpenAPI document
#: (which writes bounds as floats) and JavaScript clients state it exactly; generated
#: ids never come near it.
MAX_ID_PARAM: Final = 2**53 - 1
