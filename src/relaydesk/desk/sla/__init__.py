"""SLA engine: business-hours calendars, policies and pure per-ticket SLA clocks.

Everything here is deterministic: time is always a parameter, nothing reads a clock or does
I/O.  See docs/sla.md for the rules and the case-file schema.
"""

from .calendar import Calendar, calendar_24x7
from .engine import MetricStatus, SlaHistoryEntry, TicketSla, compute_sla
from .errors import SlaConfigError
from .explain import (
    Explanation,
    HolidayLine,
    MetricExplanation,
    PauseLine,
    PlanRef,
    SegmentLine,
    SlaCase,
    SpanLine,
    explain_case,
    parse_case,
)
from .policy import (
    PriorityTargets,
    SlaEvent,
    SlaPolicy,
    Target,
    default_calendars,
    default_policy,
)

__all__ = [
    "Calendar",
    "Explanation",
    "HolidayLine",
    "MetricExplanation",
    "MetricStatus",
    "PauseLine",
    "PlanRef",
    "PriorityTargets",
    "SegmentLine",
    "SlaCase",
    "SlaConfigError",
    "SlaEvent",
    "SlaHistoryEntry",
    "SlaPolicy",
    "SpanLine",
    "Target",
    "TicketSla",
    "calendar_24x7",
    "compute_sla",
    "default_calendars",
    "default_policy",
    "explain_case",
    "parse_case",
]
