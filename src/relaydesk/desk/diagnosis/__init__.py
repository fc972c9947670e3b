"""Diagnosis: where is the problem — network, client, server configuration or a defect
(docs/diagnosis.md).  Pure rules over a telemetry snapshot; an adapter reads snapshots from
the telemetry store; a service adds knowledge-base links."""

from relaydesk.desk.diagnosis.engine import diagnose, rank, summarise
from relaydesk.desk.diagnosis.model import (
    LAYERS,
    LOW_CONFIDENCE,
    PUBLIC_CONFIDENCE,
    SYMPTOMS,
    ArticleLink,
    ClientReport,
    Connection,
    Diagnosis,
    Evidence,
    Finding,
    Layer,
    Minute,
    Rejected,
    RunSettings,
    Snapshot,
    Symptom,
    Trace,
)
from relaydesk.desk.diagnosis.rules import RULES
from relaydesk.edges.geo import (
    CITIES,
    DEFAULT_REGION_CITIES,
    FIBRE_KM_PER_S,
    ROUTE_FACTOR,
    city_for,
    great_circle_km,
    propagation_floor_rtt_ms,
)

__all__ = [
    "CITIES",
    "DEFAULT_REGION_CITIES",
    "FIBRE_KM_PER_S",
    "LAYERS",
    "LOW_CONFIDENCE",
    "PUBLIC_CONFIDENCE",
    "ROUTE_FACTOR",
    "RULES",
    "SYMPTOMS",
    "ArticleLink",
    "ClientReport",
    "Connection",
    "Diagnosis",
    "Evidence",
    "Finding",
    "Layer",
    "Minute",
    "Rejected",
    "RunSettings",
    "Snapshot",
    "Symptom",
    "Trace",
    "city_for",
    "diagnose",
    "great_circle_km",
    "propagation_floor_rtt_ms",
    "rank",
    "summarise",
]
