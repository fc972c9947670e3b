"""SLA policies (targets per priority) and the ticket events the engine consumes.

All types are frozen msgspec Structs so the desk can store and send them as JSON.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Final, Literal

import msgspec

from .calendar import Calendar, calendar_24x7, parse_hhmm
from .errors import SlaConfigError

Priority = Literal["P0", "P1", "P2", "P3"]
Status = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
MetricName = Literal["first_response", "next_response", "resolution"]
AuthorRole = Literal["agent", "customer", "automation", "bot"]
Channel = Literal["ticket", "war_room"]
EventKind = Literal["created", "priority_changed", "status_changed", "comment"]
ReopenMode = Literal["resume", "new_cycle"]
TargetKind = Literal["duration", "end_of_business_day", "end_of_nth_business_day"]

PRIORITIES: Final = ("P0", "P1", "P2", "P3")
METRICS: Final = ("first_response", "next_response", "resolution")
#: Kinds that are due at the end of a business day (section 4.4 of docs/sla.md).
END_OF_DAY_KINDS: Final = ("end_of_business_day", "end_of_nth_business_day")
#: Input bounds (docs/sla.md, "Limits").  A target longer than about a year is not a support
#: contract, and bounding it bounds how far any computation walks a calendar.
MAX_TARGET_SECONDS: Final = 400 * 86400.0
MAX_TARGET_DAYS: Final = 400
STATUSES: Final = ("new", "open", "pending", "on_hold", "solved", "closed")
#: Statuses that may pause the clock.  ``solved``/``closed`` are not pauses: they fulfil the
#: resolution metric (and suspend the reply metrics, see docs/sla.md).
PAUSABLE_STATUSES: Final = ("pending", "on_hold")
RESOLVED_STATUSES: Final = ("solved", "closed")
#: Name of the implicit always-open calendar.
CALENDAR_24X7: Final = "24x7"
_ROLES: Final = ("agent", "customer", "automation", "bot")
_CHANNELS: Final = ("ticket", "war_room")


#: Policy ids name URL path segments (``/sla/policies/{id}``): 1-64 printable characters,
#: no ``/`` and no surrounding space.
_POLICY_ID: Final = re.compile(
    r"[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]{0,62}[^\s/\x00-\x1f\x7f])?"
)
_MAX_VERSION: Final = 1_000_000


def _check_pausable(statuses: tuple[str, ...]) -> None:
    for st in statuses:
        if st not in PAUSABLE_STATUSES:
            raise SlaConfigError(
                "policy.bad_pause_status", f"{st!r} cannot pause the clock (pending, on_hold)"
            )


class Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One SLA target, measured on the named calendar.

    ``kind="duration"``: the budget is ``seconds + business_days * business_day_hours`` of open
    time on ``calendar`` (on ``24x7`` a business day is 24 h).
    ``kind="end_of_business_day"``: due at the end of the business day during which the clock
    started, or of the next business day opening after it (see
    :meth:`Calendar.end_of_business_day`); its budget is the open time from the start to then.
    ``kind="end_of_nth_business_day"``: due at the end of the ``n``-th business day after that
    one (``n=0`` is ``end_of_business_day``).
    For both end-of-day kinds, ``cutoff`` (``"HH:MM"``, calendar-local) moves a clock that
    starts at or after the business day's cut-off to the next business day, and
    ``min_seconds`` is the least budget (open time) the target ever gives.
    """

    calendar: str = CALENDAR_24X7
    kind: TargetKind = "duration"
    seconds: float = 0.0
    business_days: float = 0.0
    n: int | None = None
    cutoff: str | None = None
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("duration", *END_OF_DAY_KINDS):
            raise SlaConfigError("policy.bad_target", f"unknown target kind {self.kind!r}")
        for label, value in (
            ("seconds", self.seconds),
            ("business_days", self.business_days),
            ("min_seconds", self.min_seconds),
        ):
            if not math.isfinite(value) or value < 0:
                raise SlaConfigError(
                    "policy.bad_target", f"{label} must be a finite, non-negative number"
                )
        if self.seconds > MAX_TARGET_SECONDS or self.min_seconds > MAX_TARGET_SECONDS:
            raise SlaConfigError(
                "policy.bad_target", f"a target budget is at most {MAX_TARGET_SECONDS:g} s"
            )
        if self.business_days > MAX_TARGET_DAYS:
            raise SlaConfigError("policy.bad_target", f"business_days is at most {MAX_TARGET_DAYS}")
        if self.kind == "duration":
            if self.seconds == 0 and self.business_days == 0:
                raise SlaConfigError(
                    "policy.bad_target", "a duration target needs a positive budget"
                )
            if self.n is not None or self.cutoff is not None or self.min_seconds:
                raise SlaConfigError(
                    "policy.bad_target",
                    "n, cutoff and min_seconds belong to end-of-business-day targets",
                )
            return
        if self.seconds or self.business_days:
            raise SlaConfigError(
                "policy.bad_target", f"{self.kind} targets take no seconds/business_days"
            )
        if self.kind == "end_of_business_day" and self.n is not None:
            raise SlaConfigError(
                "policy.bad_target",
                "end_of_business_day takes no n (use end_of_nth_business_day)",
            )
        if self.kind == "end_of_nth_business_day" and (
            self.n is None or isinstance(self.n, bool) or not 0 <= self.n <= MAX_TARGET_DAYS
        ):
            raise SlaConfigError(
                "policy.bad_target",
                f"end_of_nth_business_day needs n between 0 and {MAX_TARGET_DAYS}",
            )
        if self.cutoff is not None:
            parse_hhmm(self.cutoff, allow_24=False)

    @property
    def nth_day(self) -> int:
        """How many business days after the starting one an end-of-day target falls due."""
        return self.n or 0

    def cutoff_minute(self) -> int | None:
        """The cut-off as minutes after local midnight, or None."""
        return None if self.cutoff is None else parse_hhmm(self.cutoff, allow_24=False)

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
    subset of ``("pending", "on_hold")``; ``metric_pause_statuses`` overrides it per metric
    (``{"first_response": []}`` keeps the first-response clock running while pending).
    ``reopen_mode`` says what a solved -> open re-open does to the resolution clock:
    ``resume`` keeps the elapsed time, ``new_cycle`` restarts it with a full budget.
    ``warn_fraction`` of each budget gives the metric's ``warn_at``.
    """

    id: str
    version: int
    name: str
    targets: dict[str, PriorityTargets]
    pause_statuses: tuple[str, ...] = ("pending",)
    metric_pause_statuses: dict[str, tuple[str, ...]] = {}
    reopen_mode: ReopenMode = "resume"
    warn_fraction: float = 0.75

    def __post_init__(self) -> None:
        if not _POLICY_ID.fullmatch(self.id):
            raise SlaConfigError(
                "policy.bad_id", "policy id: 1-64 printable characters, no '/', no outer spaces"
            )
        if isinstance(self.version, bool) or not 1 <= self.version <= _MAX_VERSION:
            raise SlaConfigError("policy.bad_version", f"version must be in 1..{_MAX_VERSION}")
        for prio in self.targets:
            if prio not in PRIORITIES:
                raise SlaConfigError(
                    "policy.unknown_priority", f"unknown priority {prio!r} (use P0..P3)"
                )
        for prio in PRIORITIES:
            if prio not in self.targets:
                raise SlaConfigError("policy.missing_priority", f"no targets for {prio}")
        for metric, statuses in self.metric_pause_statuses.items():
            if metric not in METRICS:
                raise SlaConfigError(
                    "policy.unknown_metric", f"unknown metric {metric!r} in metric_pause_statuses"
                )
            _check_pausable(statuses)
        _check_pausable(self.pause_statuses)
        if self.reopen_mode not in ("resume", "new_cycle"):
            raise SlaConfigError(
                "policy.bad_reopen_mode", f"unknown reopen_mode {self.reopen_mode!r}"
            )
        if not 0 < self.warn_fraction <= 1:
            raise SlaConfigError("policy.bad_warn_fraction", "warn_fraction must be in (0, 1]")

    def pauses_for(self, metric: MetricName) -> tuple[str, ...]:
        """The statuses that pause ``metric``'s clock (its own list, else the policy's)."""
        return self.metric_pause_statuses.get(metric, self.pause_statuses)

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
