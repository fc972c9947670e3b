"""Diagnosis scenario 3 reproduced for real: one edge node jittering for part of the window.

Two ``relaydesk serve`` nodes, ``edge-a`` and ``edge-b``, are labelled with the same
region and share one PostgreSQL database and a NATS bus (a real cluster).  Four app users
reach ``edge-a`` directly.  Four more run in a network namespace and reach ``edge-b``
through a ``netsim`` impairment proxy on the namespace's veth link, as users behind one
edge's access network would.  Everyone is in one channel, so messages cross the nodes.

After a clean start the path to ``edge-b`` degrades for ``IMPAIRED_S`` seconds, then
recovers:

* the proxy adds 150 ms ± 150 ms of delay jitter in each direction and cuts the link
  twice (every connection reset, new ones refused for two seconds);
* nftables drops 10 % of the packets entering the namespace at random (real loss, TCP
  retransmits), as ``tests/netlab`` does.

Nothing else is injected: the diagnosis reads what the two nodes recorded (the SDKs'
probes, the deliveries and their acknowledgements, the disconnects).  Expected: a
``network`` finding naming ``edge-b`` and a time range within the impaired minutes,
its success rate and RTT against its sibling, with "drain or reroute" as the action;
nothing about ``edge-a``.  A ticket filed through the API is acknowledged with it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cluster_kit import cluster_config
from diagnosis_kit import desk_key, diagnose, diagnose_cli, file_ticket, record_scenario
from edge_clients import run as run_edge_clients

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "netlab"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from netns import NetnsLink, require_netlab
from quality_kit import flush

from relaydesk.netsim import LinkProfile, open_netsim

pytestmark = [pytest.mark.services, pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

REGION = "eu-west"
# The diagnosis works on minute aggregates and wants two bad minutes: 75 s of impairment
# span at least two minute buckets with 10 s or more of it each, wherever they start.
CLEAN_BEFORE_S = 15.0
IMPAIRED_S = 75.0
CLEAN_AFTER_S = 10.0
USERS = 4
JITTER = LinkProfile(latency_ms=150, jitter_ms=150)
CUTS_AT_S = (20.0, 50.0)  # into the impaired period
CUT_FOR_S = 2.0
DROP_PERCENT = 10


def _ms(dt: str) -> int:
    return int(datetime.fromisoformat(dt.replace("Z", "+00:00")).timestamp() * 1000)


async def _impair(netsim: Any, link: NetnsLink, marks: dict[str, float]) -> None:
    """Clean, then jitter + cuts + packet drop for ``IMPAIRED_S``, then clean again."""
    await asyncio.sleep(CLEAN_BEFORE_S)
    marks["impaired_from"] = time.time()
    for direction in ("upstream", "downstream"):
        netsim.impair(direction, JITTER)
    await asyncio.to_thread(link.drop_percent, DROP_PERCENT, "input")
    elapsed = 0.0
    for at in CUTS_AT_S:
        await asyncio.sleep(at - elapsed)
        netsim.cut("reset")
        await asyncio.sleep(CUT_FOR_S)
        netsim.restore()
        elapsed = at + CUT_FOR_S
    await asyncio.sleep(IMPAIRED_S - elapsed)
    for direction in ("upstream", "downstream"):
        netsim.impair(direction, LinkProfile())
    await asyncio.to_thread(link.drop_percent, 0, "input")
    marks["impaired_to"] = time.time()


async def test_jittering_edge_node_is_located_against_its_sibling(
    make_server: Callable[..., Any], pg_url: str, nats_url: str
) -> None:
    require_netlab()
    a = make_server(cluster_config(pg_url, nats_url, "edge-a", leader=True, region=REGION))
    b = make_server(cluster_config(pg_url, nats_url, "edge-b", leader=False, region=REGION))
    a_users = [f"ua{i}" for i in range(USERS)]
    b_users = [f"ub{i}" for i in range(USERS)]
    a.add_members(a_users + b_users, "edge")
    start_ms = int(time.time() * 1000)
    seconds = CLEAN_BEFORE_S + IMPAIRED_S + CLEAN_AFTER_S
    link = NetnsLink()
    try:
        link.open()
        netsim = await open_netsim((link.host_ip, 0), ("127.0.0.1", b.port))
        try:
            url_b = f"ws://{link.host_ip}:{netsim.listen_address[1]}/v1/ws"
            tokens_b = [[u, f"{u}-phone", b.token(u, ttl_s=3600)] for u in b_users]
            proc = link.run(
                [sys.executable, str(Path(__file__).parent / "edge_clients.py"), url_b,
                 REGION, str(seconds), json.dumps(tokens_b)]
            )  # fmt: skip
            assert proc.stdout is not None
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == b"ready"
            tokens_a = [[u, f"{u}-phone", a.token(u, ttl_s=3600)] for u in a_users]
            marks: dict[str, float] = {}
            counts_a, _ = await asyncio.gather(
                run_edge_clients(a.ws_url, REGION, seconds, tokens_a),
                _impair(netsim, link, marks),
            )
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err.decode()[-2000:]
            counts_b = json.loads(out.decode().strip().splitlines()[-1])
            stats = netsim.statistics()
        finally:
            await netsim.aclose()
    finally:
        link.close()
    assert stats.cuts == len(CUTS_AT_S)
    assert counts_a["acked"] > 0 and counts_b["acked"] > 0, (counts_a, counts_b)

    await asyncio.to_thread(flush, a)
    diagnosis = await asyncio.to_thread(diagnose, b, start_ms, "delay", REGION)
    findings = diagnosis["findings"]
    located = [f for f in findings if f["rule"] == "node_outlier"]
    assert located, json.dumps(findings, indent=1)[:4000]
    top = findings[0]
    assert top["rule"] == "node_outlier", [(f["rule"], f["layer"], f["title"]) for f in findings]
    assert top["layer"] == "network" and top["node"] == "edge-b" and top["region"] == REGION
    assert not [f for f in findings if f.get("node") == "edge-a" and f["layer"] != "none"]
    assert "Drain edge-b" in top["action"]
    # The time range lies within the impaired minutes (minute buckets, so rounded out).
    range_ev = next(e for e in top["evidence"] if e["metric"] == "bad minutes")
    lo = int(marks["impaired_from"] * 1000) // 60_000 * 60_000
    hi = (int(marks["impaired_to"] * 1000) // 60_000 + 1) * 60_000
    assert lo <= _ms(range_ev["window_start"]) and _ms(range_ev["window_end"]) <= hi, (
        range_ev,
        marks,
    )
    # Compared with the sibling: RTT worse than edge-a's over the same minutes.
    rtt = next(e for e in top["evidence"] if e["metric"] == "probe RTT p95")
    assert rtt["node"] == "edge-b" and rtt["baseline"] is not None
    assert rtt["value"] > 2 * rtt["baseline"], rtt

    # The same from the command line: exit status 1 means "found a problem".
    cli = await asyncio.to_thread(
        diagnose_cli,
        *["--app", b.app, "--from", str(start_ms), "--region", REGION,
         "--url", b.http_url, "--key", desk_key(b, "agent:alice"), "--symptom", "delay"],
    )  # fmt: skip
    assert cli.exit_code == 1, cli.output
    assert "edge-b" in cli.output and "network" in cli.output, cli.output

    ack = await asyncio.to_thread(
        file_ticket,
        b,
        subject="Messages slow and failing for some users in eu-west",
        description="Since a few minutes, part of our users see delays and send failures.",
        start_ms=start_ms,
        region=REGION,
        priority="P1",
    )
    top_note = ack.top
    locus_ok = (
        top_note is not None and top_note.rule == "node_outlier" and "edge-b" in top_note.title
    )
    record_scenario(
        "3",
        "edge node jittering among its siblings",
        ack,
        expected_layer="network",
        locus_ok=locus_ok,
        locus=top_note.title if top_note is not None else "",
    )
    assert ack.seconds <= 10.0
    assert top_note is not None and top_note.layer == "network" and locus_ok, ack.note
