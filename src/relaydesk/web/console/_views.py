"""View models for the templates: SLA clocks on a timeline, durations, event lines.

Pure functions of the engine's output and ``now``; the templates only place what these
return (percent offsets along one axis), so the timeline maths is unit-tested here and
not in a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from relaydesk.desk.sla import MetricStatus, TicketSla
from relaydesk.desk.tickets.model import TicketEvent


def fmt_time(dt: datetime | None) -> str:
    """``2024-03-04 10:15 UTC`` (empty for ``None``)."""
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M UTC")


def fmt_duration(seconds: float | None) -> str:
    """``2d 3h``, ``1h 05m``, ``4m 10s``; negative durations get a minus sign."""
    if seconds is None:
        return ""
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    d, rest = divmod(s, 86_400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{sign}{d}d {h}h"
    if h:
        return f"{sign}{h}h {m:02d}m"
    return f"{sign}{m}m {sec:02d}s"


class Span(msgspec.Struct, frozen=True):
    """A shaded stretch of the timeline (a pause), in percent of its width."""

    left: float
    width: float
    title: str


class Mark(msgspec.Struct, frozen=True):
    """A point on the timeline (target, warning, fulfilment, breach, now)."""

    kind: str
    left: float
    title: str


class Clock(msgspec.Struct, frozen=True):
    """One SLA metric ready to draw."""

    metric: str
    label: str
    state: str
    priority: str
    cycle: int
    target: str
    remaining: str
    elapsed: str
    budget: str
    fulfilled: str
    breached: str
    calendar: str
    spans: list[Span]
    marks: list[Mark]
    axis_start: str
    axis_end: str


_LABELS = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}


def _clock(m: MetricStatus, now: datetime) -> Clock:
    start = m.started_at
    instants = [now, start]
    for t in (m.target_at, m.fulfilled_at, m.breached_at, m.warn_at):
        if t is not None:
            instants.append(t)
    for a, b in m.paused:
        instants.append(a)
        if b is not None:
            instants.append(b)
    end = max(instants)
    span = (end - start) * 1.05 or timedelta(minutes=1)

    def pct(t: datetime) -> float:
        return round(max(0.0, min(100.0, (t - start) / span * 100)), 2)

    spans = [
        Span(
            left=pct(a),
            width=round(max(0.5, pct(b or now) - pct(a)), 2),
            title=f"paused {fmt_time(a)} – {fmt_time(b) if b else 'now'}",
        )
        for a, b in m.paused
    ]
    # Drawn in order: "now" first so that a target met just now stays visible on top.
    marks: list[Mark] = [Mark(kind="now", left=pct(now), title=f"now {fmt_time(now)}")]
    if m.warn_at is not None:
        marks.append(Mark(kind="warn", left=pct(m.warn_at), title=f"warning {fmt_time(m.warn_at)}"))
    if m.target_at is not None:
        marks.append(
            Mark(kind="target", left=pct(m.target_at), title=f"target {fmt_time(m.target_at)}")
        )
    if m.breached_at is not None:
        marks.append(
            Mark(
                kind="breach", left=pct(m.breached_at), title=f"breached {fmt_time(m.breached_at)}"
            )
        )
    if m.fulfilled_at is not None:
        marks.append(
            Mark(kind="done", left=pct(m.fulfilled_at), title=f"met {fmt_time(m.fulfilled_at)}")
        )
    return Clock(
        metric=m.metric,
        label=_LABELS.get(m.metric, m.metric),
        state=m.state,
        priority=m.priority,
        cycle=m.cycle,
        target=fmt_time(m.target_at) or "no target",
        remaining=fmt_duration(m.remaining_seconds),
        elapsed=fmt_duration(m.elapsed_seconds),
        budget=fmt_duration(m.budget_seconds),
        fulfilled=fmt_time(m.fulfilled_at),
        breached=fmt_time(m.breached_at),
        calendar=m.calendar,
        spans=spans,
        marks=marks,
        axis_start=fmt_time(start),
        axis_end=fmt_time(end),
    )


def sla_clocks(sla: TicketSla, now: datetime) -> list[Clock]:
    """Every metric of the ticket's SLA as a drawable clock."""
    return [_clock(m, now) for m in sla.metrics]


def _value_text(value: Any) -> str:
    # Nested values are written out in words, never as Python's dict/list repr.
    if isinstance(value, dict):
        if set(value) == {"policy_id", "version"}:
            return f"{value['policy_id']} v{value['version']}"
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    return str(value)


#: Fields never shown: internal ids, and values that say nothing (``None``).
_HIDDEN_FIELDS = frozenset({"comment_id", "key"})


def _data_text(kind: str, data: dict[str, Any], names: Mapping[str, str]) -> str:
    if kind == "sla_policy_applied" and {"from", "to"} <= set(data):
        return f"from {_value_text(data['from'])} to {_value_text(data['to'])}"
    if kind == "assignee_changed" and {"from", "to"} <= set(data):

        def who(v: Any) -> str:
            return "nobody" if v is None else names.get(f"agent:{v}", str(v))

        return f"from {who(data['from'])} to {who(data['to'])}"
    if kind in ("status_changed", "priority_changed") and {"from", "to"} <= set(data):
        return f"from {_value_text(data['from'])} to {_value_text(data['to'])}"
    if kind in ("sla_warning", "sla_breach", "page"):
        # Escalation notices: which clock, why, who was paged and told; not the dedup key.
        parts = [_LABELS.get(str(data.get("metric")), str(data.get("metric") or "SLA"))]
        if data.get("reason"):
            parts.append(_value_text(data["reason"]))
        if data.get("agent_id"):
            parts.append("paged " + names.get(f"agent:{data['agent_id']}", str(data["agent_id"])))
        if data.get("notifiers"):
            parts.append("via " + _value_text(data["notifiers"]))
        return " · ".join(parts)
    if kind == "comment":
        visibility = "public" if data.get("public", True) else "internal note"
        return visibility + (" · war room" if data.get("channel") == "war_room" else "")
    return "; ".join(
        f"{k.replace('_', ' ')}: {_value_text(v)}"
        for k, v in data.items()
        if k not in _HIDDEN_FIELDS and v is not None
    )


_KINDS = {"sla_policy_applied": "SLA policy applied"}


class EventLine(msgspec.Struct, frozen=True):
    """One line of the ticket's event log."""

    seq: int
    at: str
    kind: str
    actor: str
    detail: str


def event_lines(
    events: Sequence[TicketEvent],
    *,
    names: Mapping[str, str] | None = None,
    renumber: bool = False,
) -> list[EventLine]:
    """The event log as the ticket page shows it (newest last).  ``names`` maps
    ``kind:id`` to a person's name; ``renumber`` numbers the lines 1, 2, 3... (customers
    see a filtered log, whose own numbers would have gaps)."""
    names = names or {}
    return [
        EventLine(
            seq=i if renumber else e.seq,
            at=fmt_time(e.at),
            kind=_KINDS.get(e.kind, e.kind.replace("_", " ")),
            actor=names.get(f"{e.actor_kind}:{e.actor_id}")
            or (
                "relaydesk"
                if e.actor_kind in ("automation", "bot")
                else f"{e.actor_kind}:{e.actor_id}"
            ),
            detail=_data_text(e.kind, e.data, names),
        )
        for i, e in enumerate(events, start=1)
    ]
