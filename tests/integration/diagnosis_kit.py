"""Shared helpers of the diagnosis end-to-end tests: ask a running node over HTTP."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from quality_kit import flush


def desk_key(server: Any, who: str) -> str:
    """A demo desk API key (``agent:alice``, ``customer:dana``...) from the node's log."""
    text = server.log_path.read_text()
    keys = re.findall(rf"desk key\s+{re.escape(who)}\s+(\S+)", text)
    assert keys, text[-2000:]
    return str(keys[-1])


def diagnose(server: Any, start_ms: int, symptom: str, region: str | None = None) -> Any:
    """Flush the node's telemetry, then ask its diagnosis API (as an agent)."""
    flush(server)
    body: dict[str, Any] = {
        "app": server.app,
        "from": str(start_ms),
        "to": str(int(time.time() * 1000) + 60_000),
        "symptom": symptom,
    }
    if region is not None:
        body["region"] = region
    headers = {"Authorization": f"Bearer {desk_key(server, 'agent:alice')}"}
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=10) as http:
        r = http.post("/api/diagnosis", json=body)
    assert r.status_code == 200, r.text
    return r.json()
