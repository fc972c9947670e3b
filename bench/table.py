"""How every benchmark table prints a figure."""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    """``-`` for no value, two decimals below 100, thousands separators above."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
