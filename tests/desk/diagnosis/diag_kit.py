"""Builders for constructed telemetry snapshots (unit tests of the pure rules only)."""

from __future__ import annotations

import random
from typing import Any

from relaydesk.desk.diagnosis.model import Connection, Minute
from relaydesk.storage.telemetry import HistData
from relaydesk.telemetry.histogram import Histogram

T0 = 1_709_546_400_000  # 2024-03-04 10:00 UTC
MIN = 60_000


def hist(*values: tuple[float, int] | float) -> HistData:
    """A latency histogram from values or (value, count) pairs."""
    h = Histogram.latency()
    for v in values:
        if isinstance(v, tuple):
            h.observe(v[0], v[1])
        else:
            h.observe(v)
    return h.to_data()


def spread(rng: random.Random, centre: float, n: int, width: float = 0.3) -> HistData:
    """``n`` values around ``centre`` (±width, multiplicative), bucketed in 20 lumps."""
    h = Histogram.latency()
    lumps = 20
    for _ in range(lumps):
        h.observe(centre * (1 + rng.uniform(-width, width)), max(1, n // lumps))
    return h.to_data()


def healthy_minute(
    rng: random.Random,
    t: int,
    node: str,
    region: str = "eu-west",
    client_region: str = "eu-west",
    sent: int = 600,
    **overrides: Any,
) -> Minute:
    """A normal minute: ms-level server stages, tens of ms over the network."""
    stages = {
        "commit_wait": spread(rng, 1.5, sent),
        "commit": spread(rng, 2.0, sent),
        "fanout": spread(rng, 0.2, sent),
        "server": spread(rng, 4.0, sent),
        "queue_wait": spread(rng, 0.5, sent * 3),
        "client_ack": spread(rng, 35.0, sent * 3),
        "rtt": spread(rng, 30.0, 6),
        "rtt_p95": spread(rng, 45.0, 6),
    }
    stages.update(overrides.pop("stages", {}))
    fields: dict[str, Any] = dict(
        t_ms=t,
        node_region=region,
        node=node,
        client_region=client_region,
        sent=sent,
        send_errors=0,
        delivered=sent * 3,
        late=0,
        undelivered=0,
        connects=2,
        disconnects={"client_close": 2},
        active=50,
        probes=6,
        stages=stages,
    )
    fields.update(overrides)
    return Minute(**fields)


def healthy_minutes(
    rng: random.Random, nodes: tuple[str, ...] = ("edge-1", "edge-2", "edge-3"), n: int = 60
) -> list[Minute]:
    return [healthy_minute(rng, T0 + i * MIN, node) for i in range(n) for node in nodes]


def conn(
    device: str, opened: int, closed: int, reason: str = "client_close", **kw: Any
) -> Connection:
    fields: dict[str, Any] = dict(
        node_region="eu-west",
        node="edge-1",
        client_region="eu-west",
        sdk="relaydesk-python/0.1.0",
        user=device.split("-")[0],
        device=device,
        connected_ms=opened,
        closed_ms=closed,
        reason=reason,
        delivered=100,
        undelivered=0,
    )
    fields.update(kw)
    return Connection(**fields)
