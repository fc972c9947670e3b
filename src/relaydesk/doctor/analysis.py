"""Pure judgements of the doctor: clock skew, RTT/loss statistics, SDK configuration lint.

No I/O and no clock: the runner measures, these functions decide, and the unit tests
feed them numbers (STYLE rule 3).  Thresholds are module constants, documented in
docs/doctor.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec

Status = Literal["pass", "warn", "fail", "skip"]

SKEW_WARN_S = 2.0
"""Above this the client's timestamps (message ``ts``, token ``iat``) visibly disagree."""
SKEW_FAIL_S = 30.0
"""Above this freshly minted tokens may look expired or not yet valid to the server."""
LOSS_FAIL = 0.2
"""A fifth of heartbeats unanswered: the SDK will keep timing out and reconnecting."""
RTT_WARN_MS = 500.0
"""p95 heartbeat RTT above half a second: interactive messaging feels sluggish."""


class PongSample(msgspec.Struct, frozen=True):
    """One answered ping: local wall times around it and the server's stamp (ms)."""

    sent_ms: float
    received_ms: float
    server_ms: int
    rtt_ms: float  # from the monotonic clock; immune to wall-clock steps


class SkewEstimate(msgspec.Struct, frozen=True):
    """Server clock minus local clock, from the sample with the smallest RTT (NTP style).

    The server stamped its reply somewhere inside the round trip, so the true offset
    lies within ``offset_ms ± uncertainty_ms``.
    """

    offset_ms: float
    uncertainty_ms: float
    rtt_ms: float


def estimate_skew(samples: Sequence[PongSample]) -> SkewEstimate | None:
    """Offset of the server clock from the local one; ``None`` without samples.

    The fastest round trip bounds the asymmetry best, so it alone decides.
    """
    if not samples:
        return None
    best = min(samples, key=lambda s: s.rtt_ms)
    midpoint = best.sent_ms + best.rtt_ms / 2.0
    return SkewEstimate(
        offset_ms=best.server_ms - midpoint, uncertainty_ms=best.rtt_ms / 2.0, rtt_ms=best.rtt_ms
    )


def skew_status(estimate: SkewEstimate) -> tuple[Status, str]:
    """Judge a skew estimate against ``SKEW_WARN_S`` / ``SKEW_FAIL_S``."""
    seconds = abs(estimate.offset_ms) / 1000.0
    ahead = "ahead of" if estimate.offset_ms > 0 else "behind"
    text = (
        f"server clock is {seconds:.3f}s {ahead} this machine "
        f"(±{estimate.uncertainty_ms / 1000:.3f}s)"
    )
    if seconds > SKEW_FAIL_S:
        return "fail", f"{text}; over {SKEW_FAIL_S:g}s: fix NTP on this machine, tokens will fail"
    if seconds > SKEW_WARN_S:
        return "warn", f"{text}; over {SKEW_WARN_S:g}s: enable NTP time sync"
    return "pass", text


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


class ProbeSummary(msgspec.Struct, frozen=True):
    """RTT and loss over one probe run (RTT fields are ``None`` when nothing came back)."""

    sent: int
    answered: int
    loss: float
    rtt_min_ms: float | None
    rtt_p50_ms: float | None
    rtt_p95_ms: float | None
    rtt_max_ms: float | None


def summarise_probes(sent: int, rtts_ms: Sequence[float]) -> ProbeSummary:
    """Loss is the unanswered fraction; RTT percentiles over the answered probes."""
    if sent <= 0 or len(rtts_ms) > sent:
        raise ValueError("need 0 <= answered <= sent and sent > 0")
    answered = len(rtts_ms)
    return ProbeSummary(
        sent=sent,
        answered=answered,
        loss=(sent - answered) / sent,
        rtt_min_ms=min(rtts_ms) if rtts_ms else None,
        rtt_p50_ms=percentile(rtts_ms, 50) if rtts_ms else None,
        rtt_p95_ms=percentile(rtts_ms, 95) if rtts_ms else None,
        rtt_max_ms=max(rtts_ms) if rtts_ms else None,
    )


def probe_status(summary: ProbeSummary) -> tuple[Status, str]:
    """Fail at ``LOSS_FAIL`` loss; warn on any loss or p95 RTT over ``RTT_WARN_MS``."""
    lost = summary.sent - summary.answered
    if summary.answered == 0 or summary.rtt_p50_ms is None or summary.rtt_p95_ms is None:
        return "fail", f"no answer to any of {summary.sent} pings"
    text = (
        f"RTT p50 {summary.rtt_p50_ms:.1f} ms, p95 {summary.rtt_p95_ms:.1f} ms; "
        f"{lost}/{summary.sent} unanswered ({summary.loss:.0%} loss)"
    )
    if summary.loss >= LOSS_FAIL:
        return "fail", text
    if lost or summary.rtt_p95_ms > RTT_WARN_MS:
        return "warn", text
    return "pass", text


# -- SDK configuration lint ---------------------------------------------------------------


class SdkConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The connection settings of a client, as ``relaydesk.connect`` takes them.

    ``None`` for ``heartbeat_s``/``timeout_s`` means "use the server's values";
    ``None`` (or 0) for ``outbox_limit``/``buffer_limit`` means unbounded.  The
    defaults are the Python SDK's defaults.
    """

    heartbeat_s: float | None = None
    timeout_s: float | None = None
    outbox_limit: int | None = 10_000
    buffer_limit: int | None = 10_000
    reconnect_base_s: float = 0.25
    reconnect_max_s: float = 10.0
    reconnect_max_attempts: int | None = None
    connect_timeout_s: float = 15.0
    open_timeout_s: float = 5.0


class LintFinding(msgspec.Struct, frozen=True):
    """One problem with a client setting."""

    severity: Literal["warn", "fail"]
    setting: str
    message: str


RECONNECT_MIN_MAX_S = 1.0
"""A back-off ceiling under a second lets a whole fleet hammer a recovering server."""
OUTBOX_MAX = 1_000_000


def lint_sdk_config(
    config: SdkConfig,
    *,
    server_heartbeat_s: float | None,
    server_timeout_s: float | None,
    rtt_p95_s: float | None = None,
) -> list[LintFinding]:
    """Problems with ``config`` given what the server announced (``welcome``) and the RTT."""
    found: list[LintFinding] = []

    def add(severity: Literal["warn", "fail"], setting: str, message: str) -> None:
        found.append(LintFinding(severity, setting, message))

    for name in ("heartbeat_s", "timeout_s"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            add("fail", name, f"{name} must be positive, got {value:g}")
    interval = config.heartbeat_s if config.heartbeat_s is not None else server_heartbeat_s
    timeout = config.timeout_s if config.timeout_s is not None else server_timeout_s
    if interval and timeout and interval > 0 and timeout > 0:
        if timeout <= interval:
            add(
                "fail",
                "timeout_s",
                f"heartbeat timeout {timeout:g}s is not longer than the interval {interval:g}s: "
                "the client gives up on every heartbeat",
            )
        elif timeout < 2 * interval:
            add(
                "warn",
                "timeout_s",
                f"heartbeat timeout {timeout:g}s is shorter than 2x the interval "
                f"({2 * interval:g}s): one late pong forces a reconnect",
            )
    if config.heartbeat_s and server_timeout_s and config.heartbeat_s >= server_timeout_s:
        add(
            "fail",
            "heartbeat_s",
            f"pinging every {config.heartbeat_s:g}s but the server drops connections silent for "
            f"{server_timeout_s:g}s (HEARTBEAT_TIMEOUT)",
        )
    if config.reconnect_base_s <= 0 or config.reconnect_max_s < config.reconnect_base_s:
        add(
            "fail",
            "reconnect_base_s",
            "reconnect back-off needs 0 < reconnect_base_s <= reconnect_max_s",
        )
    elif config.reconnect_max_s < RECONNECT_MIN_MAX_S:
        add(
            "warn",
            "reconnect_max_s",
            f"reconnect max delay {config.reconnect_max_s:g}s is under "
            f"{RECONNECT_MIN_MAX_S:g}s: after an outage every client retries at once",
        )
    if config.reconnect_max_attempts is not None and config.reconnect_max_attempts < 3:
        add(
            "warn",
            "reconnect_max_attempts",
            f"giving up after {config.reconnect_max_attempts} attempt(s) turns a brief "
            "network blip into a permanent disconnect",
        )
    for name in ("outbox_limit", "buffer_limit"):
        limit = getattr(config, name)
        if limit is None or limit <= 0:
            add("warn", name, f"unbounded {name}: memory grows without limit while offline")
        elif limit > OUTBOX_MAX:
            add("warn", name, f"{name} {limit} is over {OUTBOX_MAX}: bound memory lower")
    if config.connect_timeout_s < config.open_timeout_s:
        add(
            "warn",
            "connect_timeout_s",
            f"connect_timeout_s {config.connect_timeout_s:g}s is shorter than one "
            f"open attempt ({config.open_timeout_s:g}s): no retry fits",
        )
    if rtt_p95_s is not None and config.open_timeout_s < 3 * rtt_p95_s:
        add(
            "warn",
            "open_timeout_s",
            f"open_timeout_s {config.open_timeout_s:g}s is under 3x the measured p95 RTT "
            f"({rtt_p95_s * 1000:.0f} ms): the upgrade needs several round trips",
        )
    return found


def lint_status(findings: Sequence[LintFinding]) -> tuple[Status, str]:
    """The check status of a lint: the worst finding, with every message."""
    if not findings:
        return "pass", "timeouts, outbox and reconnect settings are consistent"
    status: Status = "fail" if any(f.severity == "fail" for f in findings) else "warn"
    return status, "; ".join(f"{f.setting}: {f.message}" for f in findings)


class EdgeProbe(msgspec.Struct, frozen=True):
    """One candidate of the directory's ranking and the RTT the doctor measured to it:
    the fastest of a few HTTP round trips (``GET /readyz`` on a fresh connection, from
    the request written to the first byte of the answer), so it crosses every proxy on
    the path, as the client's own traffic does, not only up to the first TCP endpoint."""

    rank: int
    node: str
    url: str
    region: str = ""
    cost_ms: float = 0.0
    why: list[str] = []
    rtt_ms: float | None = None  # None: no attempt answered
    error: str = ""


EDGE_MISRANK_RATIO = 2.0
"""A lower-ranked candidate that answers this many times faster than the first..."""
EDGE_MISRANK_MS = 30.0
"""...and this many ms faster, is worth a warning: the ranking may not suit this path."""


def edges_status(edges: Sequence[EdgeProbe], excluded: int) -> tuple[Status, str]:
    """Judge the ranking the directory gave against the RTTs measured to it.

    fail: no candidate, or none answered; warn: the first one does not answer, or a
    lower-ranked one is clearly faster (``EDGE_MISRANK_*``); pass otherwise."""
    if not edges:
        return "fail", f"the directory offered no node ({excluded} left out)"

    def show(e: EdgeProbe) -> str:
        rtt = f"{e.rtt_ms:.1f} ms" if e.rtt_ms is not None else "no answer"
        return f"{e.rank}. {e.node} ({e.region}, {rtt})"

    listed = ", ".join(show(e) for e in edges)
    if excluded:
        listed += f"; {excluded} left out"
    answered = [e for e in edges if e.rtt_ms is not None]
    if not answered:
        return "fail", f"no candidate answered: {listed}"
    first = edges[0]
    if first.rtt_ms is None:
        return "warn", f"the first candidate does not answer from here: {listed}"
    best = min(answered, key=lambda e: (e.rtt_ms or 0.0, e.rank))
    assert best.rtt_ms is not None
    if (
        best is not first
        and first.rtt_ms >= EDGE_MISRANK_RATIO * best.rtt_ms
        and first.rtt_ms - best.rtt_ms >= EDGE_MISRANK_MS
    ):
        return "warn", f"{best.node} answers much faster than the first choice: {listed}"
    return "pass", listed
