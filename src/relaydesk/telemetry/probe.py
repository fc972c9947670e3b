"""Validation of client probe reports (docs/telemetry.md §probes), pure.

A probe is what the client measured; it is evidence only if it is plausible.
The rules, applied in order, each counted under its reason:

======================  ======================================================
value                   action
======================  ======================================================
a number not finite     reject (``not_finite``)
``samples`` < 1         reject (``samples``)
``rtt_p50_ms`` < 0      reject (``rtt_negative``)
``loss`` < 0 or > 1     reject (``loss_range``): a loss of 150 % is a unit bug
                        (percent sent as a fraction) and clamping it would
                        record a total outage that never happened
``ts`` > now + 5 min    reject (``future``): a skewed or forged clock
``ts`` < now - 1 h      reject (``stale``)
``samples`` > 100 000   clamp to 100 000 (``samples``)
``rtt_*`` > 10 min      clamp to 10 min (``rtt_high``)
``rtt_p95`` < ``p50``   clamp ``p95`` up to ``p50`` (``rtt_order``)
``jitter_ms`` < 0       clamp to 0 (``jitter``); above 10 min clamp (``jitter``)
======================  ======================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class ProbeReport(Protocol):
    """What a probe carries (``relaydesk.protocol.frames.Probe`` has this shape).

    Telemetry is a leaf package: it takes the frame structurally instead of
    importing the protocol.
    """

    @property
    def rtt_p50_ms(self) -> float: ...
    @property
    def rtt_p95_ms(self) -> float: ...
    @property
    def loss(self) -> float: ...
    @property
    def samples(self) -> int: ...
    @property
    def jitter_ms(self) -> float: ...
    @property
    def net(self) -> str: ...
    @property
    def sdk(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def ts(self) -> int: ...


MAX_RTT_MS = 600_000.0
MAX_SAMPLES = 100_000
FUTURE_MS = 300_000
STALE_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """A probe that passed validation (values possibly clamped)."""

    rtt_p50_ms: float
    rtt_p95_ms: float
    loss: float
    samples: int
    jitter_ms: float
    ts_ms: int


@dataclass(frozen=True, slots=True)
class ProbeVerdict:
    """``sample`` is None when rejected (``rejected`` says why); ``clamped`` lists fields."""

    sample: ProbeSample | None
    rejected: str = ""
    clamped: tuple[str, ...] = ()


def validate_probe(probe: ProbeReport, now_ms: int) -> ProbeVerdict:
    """Apply the rules above to ``probe`` received at wall time ``now_ms``."""
    numbers = (probe.rtt_p50_ms, probe.rtt_p95_ms, probe.loss, probe.jitter_ms)
    if not all(math.isfinite(x) for x in numbers):
        return ProbeVerdict(None, "not_finite")
    if probe.samples < 1:
        return ProbeVerdict(None, "samples")
    if probe.rtt_p50_ms < 0 or probe.rtt_p95_ms < 0:
        return ProbeVerdict(None, "rtt_negative")
    if not 0.0 <= probe.loss <= 1.0:
        return ProbeVerdict(None, "loss_range")
    ts = probe.ts or now_ms
    if ts > now_ms + FUTURE_MS:
        return ProbeVerdict(None, "future")
    if ts < now_ms - STALE_MS:
        return ProbeVerdict(None, "stale")
    clamped: list[str] = []
    samples = probe.samples
    if samples > MAX_SAMPLES:
        samples = MAX_SAMPLES
        clamped.append("samples")
    p50, p95 = probe.rtt_p50_ms, probe.rtt_p95_ms
    if p50 > MAX_RTT_MS or p95 > MAX_RTT_MS:
        p50, p95 = min(p50, MAX_RTT_MS), min(p95, MAX_RTT_MS)
        clamped.append("rtt_high")
    if p95 < p50:
        p95 = p50
        clamped.append("rtt_order")
    jitter = probe.jitter_ms
    if jitter < 0 or jitter > MAX_RTT_MS:
        jitter = min(max(jitter, 0.0), MAX_RTT_MS)
        clamped.append("jitter")
    return ProbeVerdict(
        ProbeSample(p50, p95, probe.loss, samples, jitter, min(ts, now_ms)), "", tuple(clamped)
    )
