"""Who gets a ticket and who gets paged: pure functions of agents, load and ``now``.

On-call shifts are weekly windows in the shift's own IANA time zone, evaluated with
zoneinfo (so a 09:00-17:00 London shift follows BST/GMT).  A shift whose end is at or
before its start runs past midnight and belongs to the day it starts on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from relaydesk.desk.tickets.model import Agent, OnCallShift

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(hhmm: str) -> int:
    hh, mm = hhmm.split(":")
    return int(hh) * 60 + int(mm)


def shift_covers(shift: OnCallShift, now: datetime) -> bool:
    """Whether ``now`` falls inside ``shift`` (start inclusive, end exclusive)."""
    local = now.astimezone(ZoneInfo(shift.timezone))
    start, end = _minutes(shift.start), _minutes(shift.end)
    minute = local.hour * 60 + local.minute
    today = _DAYS[local.weekday()]
    yesterday = _DAYS[(local - timedelta(days=1)).weekday()]
    if end > start:
        return today in shift.days and start <= minute < end
    # Overnight: the evening part belongs to today, the morning part to yesterday's shift.
    return (today in shift.days and minute >= start) or (yesterday in shift.days and minute < end)


def on_call(agent: Agent, now: datetime) -> bool:
    """Whether ``agent`` is active and inside one of their on-call shifts at ``now``."""
    return agent.active and any(shift_covers(s, now) for s in agent.oncall)


def _skill_match(agent: Agent, skills: Sequence[str]) -> int:
    return len(set(agent.skills) & set(skills))


def choose_assignee(
    agents: Sequence[Agent],
    loads: Mapping[str, int],
    skills: Sequence[str],
    now: datetime,
) -> str | None:
    """Auto-assignment by skill and load.

    Among active agents, prefer those holding every needed skill, then those holding the
    most of them; within that, the fewest open tickets, then whoever is on call now, then
    the id (deterministic).  ``None`` when there is no active agent.
    """
    candidates = [a for a in agents if a.active]
    if not candidates:
        return None
    needed = set(skills)

    def rank(a: Agent) -> tuple[int, int, int, int, str]:
        match = _skill_match(a, skills)
        return (
            0 if needed <= set(a.skills) else 1,
            -match,
            loads.get(a.id, 0),
            0 if on_call(a, now) else 1,
            a.id,
        )

    return min(candidates, key=rank).id


def choose_on_call(
    agents: Sequence[Agent],
    skills: Sequence[str],
    assignee_id: str | None,
    now: datetime,
) -> str | None:
    """The agent to page at ``now``: on call, preferring the assignee, then skill match.

    ``None`` when nobody is on call (the page still goes to the webhook and the on-call
    channel, so it is never silently dropped).
    """
    candidates = [a for a in agents if on_call(a, now)]
    if not candidates:
        return None

    def rank(a: Agent) -> tuple[int, int, str]:
        return (0 if a.id == assignee_id else 1, -_skill_match(a, skills), a.id)

    return min(candidates, key=rank).id
