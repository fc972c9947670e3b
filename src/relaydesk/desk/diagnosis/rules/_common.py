"""What every rule shares: the rule type, trace outcomes, and evidence helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from relaydesk.desk.diagnosis.model import (
    Evidence,
    Finding,
    Minute,
    Rejected,
    Snapshot,
)
from relaydesk.storage.telemetry import HistData
from relaydesk.telemetry.histogram import Histogram

Rule = Callable[[Snapshot], Sequence[Finding | Rejected]]
#: Trace outcomes that prove the device received the position.
ACKED: Final = ("acked", "late", "late_ack")

#: Disconnect reasons that mean something went wrong (telemetry's UNEXPECTED).
UNEXPECTED: Final = ("heartbeat_timeout", "protocol_error", "auth_expiry", "transport_error")
DEFAULT_COMMIT_BATCH_MAX: Final = 2000


# -- helpers -----------------------------------------------------------------------------------


def at(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _hist(minutes: Iterable[Minute], stage: str) -> Histogram:
    h = Histogram.latency()
    for m in minutes:
        data: HistData | None = m.stages.get(stage)
        if data is not None:
            h.add_data(data)
    return h


def _q(h: Histogram, q: float) -> float:
    v = h.quantile(q)
    return 0.0 if v is None else round(v, 3)


def _in_scope(snap: Snapshot, m: Minute) -> bool:
    return snap.region is None or snap.region in (m.node_region, m.client_region)


def _scoped(snap: Snapshot) -> list[Minute]:
    return [m for m in snap.minutes if _in_scope(snap, m)]


def _ev(
    snap: Snapshot,
    metric: str,
    value: float | str,
    baseline: float | str | None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    node: str | None = None,
    region: str | None = None,
    unit: str = "",
    note: str = "",
) -> Evidence:
    return Evidence(
        metric=metric,
        value=round(value, 4) if isinstance(value, float) else value,
        baseline=round(baseline, 4) if isinstance(baseline, float) else baseline,
        window_start=at(snap.from_ms if start_ms is None else start_ms),
        window_end=at(snap.to_ms if end_ms is None else end_ms),
        node=node,
        region=region,
        unit=unit,
        note=note,
    )


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _hhmm(ms: int) -> str:
    return at(ms).strftime("%H:%M")
