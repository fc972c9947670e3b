"""Telemetry: message lifecycle, connection history, network quality (docs/telemetry.md).

A leaf package: it imports only the standard library, msgspec, prometheus_client,
``relaydesk.clock``, ``relaydesk.config`` and ``relaydesk.storage``.
"""

from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, LOSS_BOUNDS, Histogram
from relaydesk.telemetry.labels import LabelBounder
from relaydesk.telemetry.metrics import MetricsExporter
from relaydesk.telemetry.probe import ProbeReport, ProbeSample, ProbeVerdict, validate_probe
from relaydesk.telemetry.query import (
    GROUPS,
    WORST_BY,
    Percentiles,
    Point,
    QualityService,
    Series,
    SeriesQuery,
    SeriesResult,
    build_series,
    worst_points,
)
from relaydesk.telemetry.recorder import (
    LATENCY_STAGES,
    REASONS,
    UNEXPECTED,
    Agg,
    ConnTelemetry,
    Recorder,
)
from relaydesk.telemetry.service import Telemetry, open_telemetry

__all__ = [
    "GROUPS",
    "LATENCY_BOUNDS_MS",
    "LATENCY_STAGES",
    "LOSS_BOUNDS",
    "REASONS",
    "UNEXPECTED",
    "WORST_BY",
    "Agg",
    "ConnTelemetry",
    "Histogram",
    "LabelBounder",
    "MetricsExporter",
    "Percentiles",
    "Point",
    "ProbeReport",
    "ProbeSample",
    "ProbeVerdict",
    "QualityService",
    "Recorder",
    "Series",
    "SeriesQuery",
    "SeriesResult",
    "Telemetry",
    "build_series",
    "open_telemetry",
    "validate_probe",
    "worst_points",
]
