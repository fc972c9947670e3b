"""Shared helpers of the telemetry tests: a telemetry-friendly server config and clients."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from raw_client import Raw

from relaydesk.protocol.frames import Hello

OPERATOR_KEY = "operator-key-0123456789abcdef"
NODE, REGION = "edge-1", "eu-west"


def telemetry_config(**telemetry: Any) -> dict[str, Any]:
    """Fast flushes, every publish traced, a short ack deadline, an operator key."""
    t = {
        "flush_interval_s": 0.5,
        "trace_sample_every": 1,
        "ack_deadline_ms": 1500,
        "operator_key": OPERATOR_KEY,
    }
    t.update(telemetry)
    return {"server": {"node_id": NODE, "region": REGION}, "telemetry": t}


async def login(url: str, token: str, device: str, region: str = "", net: str = "") -> Raw:
    """Log in with client labels and wait until the feed is live."""
    raw = await Raw.open(url)
    await raw.send(Hello(token=token, device=device, region=region, net=net, sdk="test/1"))
    await raw.expect("welcome")
    await raw.expect("synced")
    return raw


def msg_events(raw: Raw) -> list[Any]:
    return [e for e in raw.events if e.kind == "msg"]


def operator(server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=server.http_url,
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        timeout=10,
    )


def flush(server: Any) -> None:
    with operator(server) as http:
        r = http.post("/api/quality/flush")
        assert r.status_code == 200, r.text


def series(server: Any, **params: Any) -> dict[str, Any]:
    params.setdefault("from", "-10m")
    params.setdefault("to", str(int(time.time() * 1000) + 60_000))
    with operator(server) as http:
        r = http.get(f"/api/quality/apps/{server.app}/series", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body
