"""Configuration of cluster nodes for the multi-node tests.

``cluster_config(pg_url, nats_url, node, leader=..., region=..., **telemetry)`` is the
``make_server`` config of one node of a cluster: shared PostgreSQL storage, the NATS
bus under a cluster name unique to the database schema (so concurrent test runs never
hear each other), quick gap recovery, and ``quality_kit.telemetry_config`` telemetry.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from quality_kit import telemetry_config


def cluster_name(pg_url: str) -> str:
    """A bus namespace per test database: its schema name, from the libpq options."""
    options = parse_qs(urlsplit(pg_url).query).get("options", [""])[0]
    schema = options.rsplit("search_path=", 1)[-1] if "search_path=" in options else "test"
    return "".join(c for c in schema if c.isalnum() or c in "_-")[:64] or "test"


def cluster_config(
    pg_url: str,
    nats_url: str,
    node: str,
    *,
    leader: bool,
    region: str = "eu-west",
    **telemetry: Any,
) -> dict[str, Any]:
    config = telemetry_config(**telemetry)
    config["server"] = {"node_id": node, "region": region}
    config["storage"] = {"url": pg_url}
    config["cluster"] = {
        "bus": nats_url,
        "name": cluster_name(pg_url),
        "leader": leader,
        "gap_timeout_ms": 100,
        "sync_interval_ms": 250,
    }
    return config
