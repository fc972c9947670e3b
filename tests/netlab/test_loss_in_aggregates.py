"""Real packet loss shows up in the aggregates (issue: telemetry, "impair the network").

A client in a network namespace probes the gateway while nftables drops 20 % of the
packets entering the namespace (server -> client).  Over a WebSocket, TCP turns a
dropped packet into a retransmission at least one minimum RTO (200 ms on Linux)
later, so the probe counts a pong later than 150 ms as lost: the loss the
aggregates report for that client region must be 20 % within the binomial
tolerance of the sample (about 3 sigma, plus head-of-line blocking, which can
delay the next pong too): 5 %..45 %.  A clean client on loopback must show none.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from netns import NetnsLink

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from quality_kit import flush, series, telemetry_config

pytestmark = pytest.mark.root

CLIENT = str(Path(__file__).with_name("probe_client.py"))
SECONDS = 12
DROP = 20


def _probe(cmd: list[str]) -> list[str]:
    return [*cmd, str(SECONDS), "0.15"]


def test_nft_drop_is_reported_as_probe_loss(make_server: Any, netns_link: NetnsLink) -> None:
    config = telemetry_config()
    config["server"]["host"] = "0.0.0.0"  # reachable from the namespace's veth
    server = make_server(config)
    lossy_url = f"ws://{netns_link.host_ip}:{server.port}/v1/ws"
    netns_link.drop_percent(DROP, hook="input")
    lossy = netns_link.run(
        _probe([sys.executable, CLIENT, lossy_url, server.token("lossy"), "lossy"])
    )
    clean = subprocess.Popen(
        _probe([sys.executable, CLIENT, server.ws_url, server.token("clean"), "clean"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for proc in (lossy, clean):
        out, err = proc.communicate(timeout=SECONDS + 40)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.startswith(b"ready"), out
    assert netns_link.dropped_packets() > 0
    flush(server)
    groups = {
        s["client_region"]: s["total"] for s in series(server, group="client_region")["series"]
    }
    lossy_total, clean_total = groups["lossy"], groups["clean"]
    assert lossy_total["probes"] >= 4 and clean_total["probes"] >= 4
    loss = lossy_total["loss"]["mean"]
    assert 0.05 <= loss <= 0.45, lossy_total["loss"]
    assert clean_total["loss"]["mean"] == 0.0, clean_total["loss"]
    # The pongs that do arrive in time are as fast as on the clean path.
    assert lossy_total["rtt_ms"]["p50"] < 50.0, lossy_total["rtt_ms"]
