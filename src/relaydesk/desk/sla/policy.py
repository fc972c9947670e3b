"""SLA policies (targets per priority) and the ticket events the engine consumes.

All types are frozen msgspec Structs so the desk can store and send them as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec

from .calendar import Calendar, calendar_24x7
from .errors import SlaConfigError

Priority = Literal["P0", "P1", "P2", "P3"]
Status = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
MetricName = Literal["first_response", "next_response", "resolution"]
AuthorRole = Literal["agent", "customer", "automation", "bot"]
Channel = Literal["ticket", "war_room"]
EventKind = Literal["created", "priority_changed", "status_changed", "comment"]
ReopenMode = Literal["resume", "new_cycle"]
TargetKind = Literal["duration", "end_of_business_day"]

PRIORITIES: Final = ("P0", "P1", "P2", "P3")
STATUSES: Final = ("new", "open", "pending", "on_hold", "solved", "closed")
#: Statuses that may pause the clock.  ``solved``/``closed`` are not pauses: they fulfil the
#: resolution metric (and suspend the reply metrics, see docs/sla.md).
PAUSABLE_STATUSES: Final = ("pending", "on_hold")
RESOLVED_STATUSES: Final = ("solved", "closed")
#: Name of the implicit always-open calendar.
CALENDAR_24X7: Final = "24x7"
_ROLES: Final = ("agent", "customer", "automation", "bot")
_CHANNELS: Final = ("ticket", "war_room")


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One SLA target, measured on the named calendar.

    ``kind="duration"``: the budget is ``seconds + business_days * business_day_hours`` of open
    time on ``calendar`` (on ``24x7`` a business day is 24 h).
    ``kind="end_of_business_day"``: due at the end of the business day during which the clock
    started, or of the next business day opening after it (see
    :meth:`Calendar.end_of_business_day`); its budget is the open time from the start to then.
    """

    calendar: str = CALENDAR_24X7
    kind: TargetKind = "duration"
    seconds: float = 0.0
    business_days: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("duration", "end_of_business_day"):
            raise SlaConfigError("policy.bad_target", f"unknown target kind {self.kind!r}")
        if self.seconds < 0 or self.business_days < 0:
            raise SlaConfigError("policy.bad_target", "target durations must not be negative")
        if self.kind == "duration" and self.seconds == 0 and self.business_days == 0:
            raise SlaConfigError("policy.bad_target", "a duration target needs a positive budget")
        if self.kind == "end_of_business_day" and (self.seconds or self.business_days):
            raise SlaConfigError(
                "policy.bad_target", "end_of_business_day targets take no seconds/business_days"
            )

    def duration_seconds(self, calendar: Calendar) -> float:
        """Budget in business seconds of a ``duration`` target on ``calendar``."""
        return self.seconds + self.business_days * calendar.business_day_hours * 3600.0


class PriorityTargets(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Targets for one priority; ``None`` means the metric is not measured."""

    first_response: Target | None = None
    next_response: Target | None = None
    resolution: Target | None = None

    def get(self, metric: MetricName) -> Target | None:
        """The target for ``metric``."""
        if metric == "first_response":
            return self.first_response
        if metric == "next_response":
            return self.next_response
        return self.resolution


class SlaPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A versioned SLA policy.

    ``targets`` maps every priority ``P0`` .. ``P3`` to its targets.  ``pause_statuses`` is a
    subset of ``("pending", "on_hold")``.  ``reopen_mode`` says what a solved -> open re-open
    does to the resolution clock: ``resume`` keeps the elapsed time, ``new_cycle`` restarts it
    with a full budget.  ``warn_fraction`` of each budget gives the metric's ``warn_at``.
    """

    id: str
    version: int
    name: str
    targets: dict[str, PriorityTargets]
    pause_statuses: tuple[str, ...] = ("pending",)
    reopen_mode: ReopenMode = "resume"
    warn_fraction: float = 0.75

    def __post_init__(self) -> None:
        for prio in self.targets:
            if prio not in PRIORITIES:
                raise SlaConfigError(
                    "policy.unknown_priority", f"unknown priority {prio!r} (use P0..P3)"
                )
        for prio in PRIORITIES:
            if prio not in self.targets:
                raise SlaConfigError("policy.missing_priority", f"no targets for {prio}")
        for st in self.pause_statuses:
            if st not in PAUSABLE_STATUSES:
                raise SlaConfigError(
                    "policy.bad_pause_status", f"{st!r} cannot pause the clock (pending, on_hold)"
                )
        if self.reopen_mode not in ("resume", "new_cycle"):
            raise SlaConfigError(
                "policy.bad_reopen_mode", f"unknown reopen_mode {self.reopen_mode!r}"
            )
        if not 0 < self.warn_fraction <= 1:
            raise SlaConfigError("policy.bad_warn_fraction", "warn_fraction must be in (0, 1]")

    def calendar_names(self) -> set[str]:
        """Names of all calendars the targets refer to."""
        out: set[str] = set()
        for pt in self.targets.values():
            for t in (pt.first_response, pt.next_response, pt.resolution):
                if t is not None:
                    out.add(t.calendar)
        return out


class SlaEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ticket event, as the ticket service records it.

    ``at`` must be timezone-aware (UTC by convention).  Per ``kind``:
    ``created`` needs ``priority`` (``status`` defaults to ``new``); ``priority_changed`` needs
    ``priority``; ``status_changed`` needs ``status``; ``comment`` needs ``author_role`` and uses
    ``public`` and ``channel``.
    """

    at: datetime
    kind: EventKind
    priority: str | None = None
    status: str | None = None
    author_role: AuthorRole | None = None
    public: bool = True
    channel: Channel = "ticket"

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise SlaConfigError("case.bad_event", f"event time {self.at} is not timezone-aware")
        if self.kind in ("created", "priority_changed"):
            if self.priority is None:
                raise SlaConfigError("case.bad_event", f"{self.kind} event needs a priority")
            if self.priority not in PRIORITIES:
                raise SlaConfigError(
                    "policy.unknown_priority", f"unknown priority {self.priority!r}"
                )
        if self.status is not None and self.status not in STATUSES:
            raise SlaConfigError("case.bad_event", f"unknown status {self.status!r}")
        if self.kind == "status_changed" and self.status is None:
            raise SlaConfigError("case.bad_event", "status_changed event needs a status")
        if self.kind == "comment":
            if self.author_role is None or self.author_role not in _ROLES:
                raise SlaConfigError("case.bad_event", "comment event needs an author_role")
            if self.channel not in _CHANNELS:
                raise SlaConfigError("case.bad_event", f"unknown channel {self.channel!r}")
        elif self.kind not in ("created", "priority_changed", "status_changed"):
            raise SlaConfigError("case.bad_event", f"unknown event kind {self.kind!r}")


_MIN: Final = 60.0
_HOUR: Final = 3600.0


def default_calendars() -> dict[str, Calendar]:
    """The default calendars: ``business`` = Mon-Fri 09:00-17:00 Europe/London, no holidays.

    ``24x7`` is always available implicitly and is included here for convenience.
    """
    weekdays = ("mon", "tue", "wed", "thu", "fri")
    return {
        "business": Calendar(
            hours={d: ["09:00-17:00"] for d in weekdays}, timezone="Europe/London"
        ),
        CALENDAR_24X7: calendar_24x7(),
    }


def default_policy() -> SlaPolicy:
    """The brief's default service levels (docs/sla.md, "Defaults")."""
    biz = "business"
    return SlaPolicy(
        id="default",
        version=1,
        name="Default SLA",
        targets={
            "P0": PriorityTargets(
                first_response=Target(seconds=15 * _MIN),
                next_response=Target(seconds=15 * _MIN),
                resolution=Target(seconds=4 * _HOUR),
            ),
            "P1": PriorityTargets(
                first_response=Target(seconds=2 * _HOUR),
                next_response=Target(seconds=2 * _HOUR),
                resolution=Target(calendar=biz, kind="end_of_business_day"),
            ),
            "P2": PriorityTargets(
                first_response=Target(calendar=biz, business_days=1),
                next_response=Target(calendar=biz, business_days=1),
                resolution=Target(calendar=biz, business_days=5),
            ),
            "P3": PriorityTargets(
                first_response=Target(calendar=biz, business_days=3),
                next_response=Target(calendar=biz, business_days=2),
                resolution=Target(calendar=biz, business_days=5),
            ),
        },
    )
