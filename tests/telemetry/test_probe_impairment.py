"""RTT in the aggregates reflects a real, configured impairment (netsim delay).

Two SDK clients probe the gateway: one directly (client region ``local``), one
through a ``netsim`` proxy adding 40 ms each way (client region ``far``).  The
per-client-region RTT in ``/api/quality`` must show the 80 ms difference.
Tolerance: the far median within 80 ms −9 % .. 120 ms (aggregated percentiles come
from log buckets accurate to 9 %, docs/telemetry.md; the upper bound allows for
loopback and scheduling), the near median under 20 ms.
"""

from __future__ import annotations

import asyncio
from typing import Any

from quality_kit import flush, series, telemetry_config

import relaydesk
from relaydesk.netsim import LinkProfile, open_netsim


async def test_probe_rtt_in_aggregates_matches_configured_delay(make_server: Any) -> None:
    server = make_server(telemetry_config())
    delay = LinkProfile(latency_ms=40.0)
    proxy = await open_netsim(
        ("127.0.0.1", 0),
        ("127.0.0.1", server.port),
        upstream_profile=delay,
        downstream_profile=delay,
    )
    host, port = proxy.listen_address
    far_url = f"ws://{host}:{port}/v1/ws"
    probing = {"probe_interval_s": 0.5}
    try:
        async with (
            relaydesk.connect(
                server.ws_url, server.token("near"), device="n1", region="local", **probing
            ) as near,
            relaydesk.connect(
                far_url, server.token("far"), device="f1", region="far", **probing
            ) as far,
        ):
            await asyncio.sleep(6.0)  # two or three probe rounds each
            assert far.rtt is not None and far.rtt >= 0.08
            assert near.rtt is not None
    finally:
        await proxy.aclose()
    await asyncio.to_thread(flush, server)
    groups = {
        s["client_region"]: s["total"] for s in series(server, group="client_region")["series"]
    }
    far_rtt, near_rtt = groups["far"]["rtt_ms"], groups["local"]["rtt_ms"]
    assert far_rtt["n"] >= 2 and near_rtt["n"] >= 2
    assert 80.0 * 0.91 <= far_rtt["p50"] <= 120.0, far_rtt
    assert near_rtt["p50"] < 20.0, near_rtt
    assert groups["far"]["loss"]["p50"] == 0.0
