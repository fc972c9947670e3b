"""Instants in the syntax every time-window API and CLI takes (quality, diagnosis)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

_RELATIVE: Final = re.compile(r"^-([0-9]{1,12})([smhd])$")  # [0-9]: \d matches any script's digits
MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_UNIT_MS: Final = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time(value: str, now_ms: int) -> int:
    """Epoch ms from ``now``, ``-15m``/``-2h``/``-1d``, epoch s or ms, or ISO 8601 (UTC default).

    Raises ``ValueError`` with a readable message.
    """
    v = value.strip()
    if v == "now":
        return now_ms
    m = _RELATIVE.match(v)
    if m:
        return now_ms - int(m.group(1)) * _UNIT_MS[m.group(2)]
    # str.isdigit alone takes '١٢٣' and '²'; int() of 4,300+ digits raises.
    if v.isascii() and v.isdigit() and len(v) <= 15:
        n = int(v)
        ms = n * 1000 if len(v) <= 10 else n
    else:
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"time {value[:40]!r} is not 'now', -<n>[smhd], epoch seconds/ms or ISO 8601"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"time {value[:40]!r} is outside 1970-01-01 to 9999-12-31")
    return ms
