"""SLA reports: attainment per priority and month, response-time percentiles, breaches.

Definitions (docs/desk.md, "Reports"):

* A ticket belongs to the month (UTC) in which it was created; the window is
  ``[start, end)`` on creation time.
* **Attainment** of a metric is ``achieved / (achieved + breached)`` over tickets whose
  metric has an outcome; metrics still running (active or paused) are counted as
  ``open`` and left out of the ratio.  A late reply is a breach.
* **Percentiles** use the nearest-rank method on fulfilled metrics: the *business*
  seconds the SLA clock counted, and the wall-clock seconds from creation.
* **Breaches** lists every metric in the window whose target was missed, with the policy
  version the ticket was measured under.
* **Policies** is the attainment per policy version (as applied to each ticket, re-applied
  versions included) and priority, so a contract change can be compared with the one before.

The report is computed from the per-metric SLA rows cached on each ticket change and
each scheduler pass, so it reads one indexed range of tickets and never re-runs the
engine.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

import msgspec

from relaydesk.desk.tickets.model import PRIORITIES
from relaydesk.storage.desk import DeskStore, ReportRow, from_ms, to_ms
from relaydesk.storage.engine import Tx

ReportTable = Literal["attainment", "percentiles", "breaches", "policies"]
REPORT_TABLES: Final[tuple[ReportTable, ...]] = (
    "attainment",
    "percentiles",
    "breaches",
    "policies",
)
_PERCENTILES: Final = (50, 90, 95, 99)
_METRICS: Final = ("first_response", "next_response", "resolution")


class Attainment(msgspec.Struct, frozen=True):
    """Outcomes of one metric for one priority in one month."""

    month: str
    priority: str
    metric: str
    achieved: int
    breached: int
    open: int
    attainment: float | None


class PolicyAttainment(msgspec.Struct, frozen=True):
    """Outcomes of one metric for one priority under one policy version."""

    policy_id: str
    policy_version: int
    priority: str
    metric: str
    achieved: int
    breached: int
    open: int
    attainment: float | None


class Percentiles(msgspec.Struct, frozen=True):
    """Nearest-rank percentiles (seconds) of fulfilled metrics; ``priority="all"`` pools them."""

    metric: str
    priority: str
    count: int
    business_p50: float | None
    business_p90: float | None
    business_p95: float | None
    business_p99: float | None
    wall_p50: float | None
    wall_p90: float | None
    wall_p95: float | None
    wall_p99: float | None


class BreachLine(msgspec.Struct, frozen=True):
    """One missed target."""

    ticket_id: int
    organisation_id: str
    priority: str
    metric: str
    subject: str
    created_at: datetime
    target_at: datetime | None
    breached_at: datetime | None
    fulfilled_at: datetime | None
    policy_id: str = ""
    policy_version: int = 0


class SlaReport(msgspec.Struct, frozen=True):
    """The SLA report for tickets created in ``[start, end)``."""

    start: datetime
    end: datetime
    tickets: int
    attainment: list[Attainment]
    percentiles: list[Percentiles]
    breaches: list[BreachLine]
    policies: list[PolicyAttainment] = []


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values (``None`` when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def build_report(rows: Sequence[ReportRow], start: datetime, end: datetime) -> SlaReport:
    """Aggregate per-metric rows into the report (pure)."""
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    by_policy: dict[tuple[str, int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    business: dict[tuple[str, str], list[float]] = defaultdict(list)
    wall: dict[tuple[str, str], list[float]] = defaultdict(list)
    breaches: list[BreachLine] = []
    tickets: set[int] = set()
    for r in rows:
        tickets.add(r.ticket_id)
        created = from_ms(r.created_at)
        month = f"{created.year:04d}-{created.month:02d}"
        outcome = 0 if r.state == "achieved" else 1 if r.state == "breached" else 2
        counts[(month, r.priority, r.metric)][outcome] += 1
        by_policy[(r.policy_id, r.policy_version, r.priority, r.metric)][outcome] += 1
        if r.state == "breached":
            breaches.append(
                BreachLine(
                    ticket_id=r.ticket_id,
                    organisation_id=r.organisation_id,
                    priority=r.priority,
                    metric=r.metric,
                    subject=r.subject,
                    created_at=created,
                    target_at=None if r.target_at is None else from_ms(r.target_at),
                    breached_at=None if r.breached_at is None else from_ms(r.breached_at),
                    fulfilled_at=None if r.fulfilled_at is None else from_ms(r.fulfilled_at),
                    policy_id=r.policy_id,
                    policy_version=r.policy_version,
                )
            )
        if r.fulfilled_at is not None and r.metric in ("first_response", "resolution"):
            wall_s = (r.fulfilled_at - r.created_at) / 1000
            for prio in (r.priority, "all"):
                business[(r.metric, prio)].append(r.elapsed_s)
                wall[(r.metric, prio)].append(wall_s)
    prio_order = {p: i for i, p in enumerate((*PRIORITIES, "all"))}
    metric_order = {m: i for i, m in enumerate(_METRICS)}
    attainment = [
        Attainment(
            month=month,
            priority=prio,
            metric=metric,
            achieved=c[0],
            breached=c[1],
            open=c[2],
            attainment=_ratio(c),
        )
        for (month, prio, metric), c in sorted(
            counts.items(),
            key=lambda kv: (kv[0][0], prio_order.get(kv[0][1], 9), metric_order.get(kv[0][2], 9)),
        )
    ]
    percentiles: list[Percentiles] = []
    for key in sorted(business, key=lambda k: (metric_order.get(k[0], 9), prio_order[k[1]])):
        b, w = sorted(business[key]), sorted(wall[key])
        bp = [percentile(b, p) for p in _PERCENTILES]
        wp = [percentile(w, p) for p in _PERCENTILES]
        percentiles.append(
            Percentiles(
                metric=key[0],
                priority=key[1],
                count=len(b),
                business_p50=bp[0],
                business_p90=bp[1],
                business_p95=bp[2],
                business_p99=bp[3],
                wall_p50=wp[0],
                wall_p90=wp[1],
                wall_p95=wp[2],
                wall_p99=wp[3],
            )
        )
    policies = [
        PolicyAttainment(
            policy_id=pid,
            policy_version=version,
            priority=prio,
            metric=metric,
            achieved=c[0],
            breached=c[1],
            open=c[2],
            attainment=_ratio(c),
        )
        for (pid, version, prio, metric), c in sorted(
            by_policy.items(),
            key=lambda kv: (
                kv[0][0],
                kv[0][1],
                prio_order.get(kv[0][2], 9),
                metric_order.get(kv[0][3], 9),
            ),
        )
    ]
    breaches.sort(key=lambda b: (b.breached_at or b.created_at, b.ticket_id, b.metric))
    return SlaReport(
        start=start,
        end=end,
        tickets=len(tickets),
        attainment=attainment,
        percentiles=percentiles,
        breaches=breaches,
        policies=policies,
    )


def _ratio(c: list[int]) -> float | None:
    return None if c[0] + c[1] == 0 else round(c[0] / (c[0] + c[1]), 4)


def report_tx(store: DeskStore, tx: Tx, start: datetime, end: datetime) -> SlaReport:
    """Read the rows of tickets created in ``[start, end)`` and build the report."""
    return build_report(store.report_rows(tx, to_ms(start), to_ms(end)), start, end)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def report_csv(report: SlaReport, table: ReportTable = "attainment") -> str:
    """One table of the report as CSV (header row first, RFC 4180 quoting)."""
    items: Sequence[msgspec.Struct]
    columns: tuple[str, ...]
    if table == "attainment":
        items, columns = report.attainment, Attainment.__struct_fields__
    elif table == "percentiles":
        items, columns = report.percentiles, Percentiles.__struct_fields__
    elif table == "policies":
        items, columns = report.policies, PolicyAttainment.__struct_fields__
    else:
        items, columns = report.breaches, BreachLine.__struct_fields__
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        writer.writerow([_cell(getattr(item, c)) for c in columns])
    return out.getvalue()
