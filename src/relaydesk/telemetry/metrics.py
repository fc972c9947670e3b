"""Prometheus exposition of one node, on its own ``CollectorRegistry`` (no global state).

Every series carries ``node`` and ``region`` (this node's configuration) and at
most one more label from a fixed set (``stage``, ``reason``, ``outcome``,
``field``, ``kind``): nothing a client chooses becomes a label, so the number of
series is fixed by the code, not by traffic.  Per-app, per-client-region detail
lives in the quality API instead.

Values are read at scrape time from the recorder: flushed totals plus whatever
has not been flushed yet, so counters never go backwards.  Histograms reuse the
recorder's buckets (every eighth bound, i.e. powers of two in milliseconds), so
the exported cumulative counts are exact, not re-binned.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, LOSS_BOUNDS, Histogram
from relaydesk.telemetry.recorder import LATENCY_STAGES, REASONS, Recorder

# Exported latency buckets: 0.08 ms .. ~5 min in powers of two (indexes into
# LATENCY_BOUNDS_MS); exported loss buckets: a readable subset of LOSS_BOUNDS.
_LAT_IDX = [i for i in range(24, len(LATENCY_BOUNDS_MS), 8) if LATENCY_BOUNDS_MS[i] <= 330_000]
_LOSS_IDX = [
    i for i, b in enumerate(LOSS_BOUNDS) if b in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
]
# The reasons and fields probe.validate_probe emits (a fixed set, so fixed series).
_PROBE_REJECT_REASONS = ("not_finite", "samples", "rtt_negative", "loss_range", "future", "stale")
_PROBE_CLAMP_FIELDS = ("samples", "rtt_high", "rtt_order", "jitter")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _buckets(h: Histogram, idx: list[int], scale: float) -> list[tuple[str, float]]:
    cum = h.cumulative(idx)
    out = [(repr(round(h.bounds[i] * scale, 9)), float(c)) for i, c in zip(idx, cum, strict=True)]
    out.append(("+Inf", float(h.n)))
    return out


class _RecorderCollector(Collector):
    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder

    def collect(self) -> Iterator[Metric]:
        rec = self.rec
        base = [rec.node, rec.node_region]
        names = ["node", "region"]
        agg = rec.current()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=names)
            m.add_metric(base, value)
            return m

        yield counter(
            "relaydesk_messages_sent", "Publishes committed (from connections).", agg.sent
        )
        yield counter(
            "relaydesk_message_send_errors",
            "Publishes answered with an error frame.",
            agg.send_errors,
        )
        m = CounterMetricFamily(
            "relaydesk_deliveries",
            "Live and catch-up deliveries by outcome (acked within the "
            "deadline, acked late, never acked).",
            labels=[*names, "outcome"],
        )
        for outcome, value in (
            ("delivered", agg.delivered),
            ("late", agg.late),
            ("undelivered", agg.undelivered),
        ):
            m.add_metric([*base, outcome], value)
        yield m
        yield counter("relaydesk_connects", "Logged-in connections.", agg.connects)
        yield counter("relaydesk_resumes", "Logins that resumed from a cursor.", agg.resumes)
        m = CounterMetricFamily(
            "relaydesk_disconnects", "Disconnects by reason.", labels=[*names, "reason"]
        )
        for reason, value in zip(REASONS, agg.disc, strict=True):
            m.add_metric([*base, reason], value)
        yield m
        g = GaugeMetricFamily(
            "relaydesk_active_connections", "Logged-in connections now.", labels=names
        )
        g.add_metric(base, rec.active_connections())
        yield g
        h = HistogramMetricFamily(
            "relaydesk_stage_latency_seconds",
            "Message lifecycle stage latency (docs/telemetry.md); "
            "c2s_est/s2c_est are probe RTT/2 estimates.",
            labels=[*names, "stage"],
        )
        for stage in LATENCY_STAGES:
            if stage in ("rtt", "rtt_p95"):
                continue
            hist = agg.hist(stage)
            h.add_metric([*base, stage], _buckets(hist, _LAT_IDX, 0.001), hist.sum / 1000.0)
        yield h
        h = HistogramMetricFamily(
            "relaydesk_probe_rtt_seconds",
            "Client-probed round-trip time (median per probe).",
            labels=names,
        )
        h.add_metric(base, _buckets(agg.rtt, _LAT_IDX, 0.001), agg.rtt.sum / 1000.0)
        yield h
        h = HistogramMetricFamily(
            "relaydesk_probe_loss_ratio", "Client-probed loss fraction (per probe).", labels=names
        )
        h.add_metric(base, _buckets(agg.loss, _LOSS_IDX, 1.0), agg.loss.sum)
        yield h
        yield counter("relaydesk_probes", "Probe reports accepted.", agg.probes)
        m = CounterMetricFamily(
            "relaydesk_probes_rejected",
            "Probe reports rejected as implausible, by reason.",
            labels=[*names, "reason"],
        )
        for reason in _PROBE_REJECT_REASONS:
            m.add_metric([*base, reason], rec.probe_rejections.get(reason, 0))
        yield m
        m = CounterMetricFamily(
            "relaydesk_probes_clamped",
            "Probe values clamped into range, by field.",
            labels=[*names, "field"],
        )
        for field in _PROBE_CLAMP_FIELDS:
            m.add_metric([*base, field], rec.probe_clamps.get(field, 0))
        yield m
        m = CounterMetricFamily(
            "relaydesk_telemetry_labels_bounded",
            "Client label values cut to the length limit or folded into 'other'.",
            labels=[*names, "kind"],
        )
        m.add_metric([*base, "truncated"], rec.labels.truncated)
        m.add_metric([*base, "folded"], rec.labels.folded)
        yield m
        yield counter("relaydesk_traces", "Sampled message traces started.", agg.traces)
        m = CounterMetricFamily(
            "relaydesk_telemetry_events", "Telemetry housekeeping events.", labels=[*names, "kind"]
        )
        for kind, value in sorted(rec.stats.items()):
            m.add_metric([*base, kind], value)
        yield m


class MetricsExporter:
    """A per-node registry with the recorder's collector; ``render()`` is the text format."""

    def __init__(self, recorder: Recorder | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        if recorder is not None:
            self.registry.register(_RecorderCollector(recorder))

    def render(self) -> bytes:
        return generate_latest(self.registry)
