"""Bounded label values: client-reported strings never grow storage or metrics unbounded.

A client chooses its own region, network type and SDK string.  Each value is
cleaned (printable ASCII only), cut to ``max_len`` characters, and the first
``max_values`` distinct values of each label are kept as they are; every later
new value becomes ``"other"``.  Both events are counted (``truncated``,
``folded``) and exported as ``relaydesk_telemetry_labels_bounded_total``.

The set of seen values lives for the process: its size is the bound.
"""

from __future__ import annotations

OTHER = "other"
UNKNOWN = "unknown"


class LabelBounder:
    """Clean, cut and fold label values; pure apart from its own counters."""

    __slots__ = ("folded", "max_len", "max_values", "seen", "truncated")

    def __init__(self, max_len: int = 64, max_values: int = 100) -> None:
        self.max_len = max_len
        self.max_values = max_values
        self.seen: dict[str, set[str]] = {}
        self.truncated = 0
        self.folded = 0

    def bound(self, label: str, value: str) -> str:
        """The value to record for ``label``; ``""`` becomes ``"unknown"``."""
        clean = "".join(ch for ch in value if " " <= ch <= "~").strip()
        if not clean:
            return UNKNOWN
        if len(clean) > self.max_len:
            clean = clean[: self.max_len]
            self.truncated += 1
        seen = self.seen.setdefault(label, set())
        if clean in seen:
            return clean
        if len(seen) >= self.max_values:
            self.folded += 1
            return OTHER
        seen.add(clean)
        return clean
