"""The quality API over HTTP against a real server: auth, filters, bad input, /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quality_kit import NODE, OPERATOR_KEY, REGION, flush, login, series, telemetry_config

from relaydesk.protocol.frames import Ack, Probe, Publish

OTHER_APP, OTHER_SECRET = "other", "o" * 32


@pytest.fixture
def server(make_server: Callable[..., Any]) -> Any:
    config = telemetry_config()
    config["apps"] = [{"id": OTHER_APP, "secret": OTHER_SECRET}]
    return make_server(config)


async def _traffic(server: Any) -> None:
    """Two clients in two client regions exchange a few messages and probes."""
    eu = await login(server.ws_url, server.token("ann"), "a1", region="eu", net="wifi")
    us = await login(server.ws_url, server.token("ben"), "b1", region="us", net="cell")
    for i in range(5):
        await eu.send(Publish(id=f"e{i}", to="user:ben", body=b"hi"))
    await us.send(Probe(rtt_p50_ms=80.0, rtt_p95_ms=120.0, loss=0.02, samples=50, net="cell"))
    await us.send(Probe(rtt_p50_ms=-3.0, rtt_p95_ms=1.0, loss=0.0, samples=5))  # rejected
    await us.send(Probe(rtt_p50_ms=10.0, rtt_p95_ms=10.0, loss=7.0, samples=5))  # rejected
    await us.send(
        Probe(rtt_p50_ms=10.0, rtt_p95_ms=10.0, loss=0.0, samples=5, ts=2**53)
    )  # far future: rejected
    await us.send(
        Probe(rtt_p50_ms=10.0, rtt_p95_ms=10.0, loss=0.0, samples=5, region="r" * 200)
    )  # long label: cut
    while len([e for e in us.events if e.kind == "msg"]) < 5:
        await us.recv()
    await us.send(Ack(pos=us.events[-1].pos))
    while len([e for e in eu.events if e.kind == "msg"]) < 5:
        await eu.recv()
    await eu.send(Ack(pos=eu.events[-1].pos))
    await us.send(Publish(id="x", to="user:ben", body=b"\x00"))  # a note to self
    await us.recv()
    for raw in (eu, us):
        await raw.aclose()


async def test_filters_and_grouping(server: Any) -> None:
    await _traffic(server)
    flush(server)
    by_node = series(server)  # default grouping: per region and node
    (only,) = by_node["series"]
    assert (only["node_region"], only["node"], only["client_region"]) == (REGION, NODE, "*")
    assert only["total"]["sent"] == 6
    assert only["total"]["probes"] == 2 and only["total"]["probes_rejected"] == 3
    assert only["total"]["probes_clamped"] == 0
    by_client = {
        s["client_region"]: s["total"] for s in series(server, group="client_region")["series"]
    }
    assert set(by_client) == {"eu", "us"}
    assert by_client["us"]["rtt_ms"]["n"] == 2
    assert 70 <= by_client["us"]["rtt_ms"]["p95"] <= 88  # the 80 ms probe, from buckets
    assert by_client["us"]["loss"]["n"] == 2
    assert series(server, region="ap-south")["series"] == []
    assert series(server, node="edge-9")["series"] == []
    assert series(server, region=REGION, node=NODE)["series"][0]["total"]["sent"] == 6
    assert series(server, client_region="eu", group="none")["series"][0]["total"]["sent"] == 5
    # A window before the traffic is empty.
    assert series(server, **{"from": "-3h", "to": "-2h"})["series"] == []
    with httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.secret}"}
    ) as http:
        worst = http.get(
            f"/api/quality/apps/{server.app}/worst", params={"from": "-10m", "by": "send_success"}
        ).json()
        assert worst == []  # every publish succeeded
        minutes = http.get(
            f"/api/quality/apps/{server.app}/series", params={"from": "-10m", "step": 300}
        ).json()
        assert minutes["step_s"] == 300


@pytest.mark.parametrize(
    ("headers", "app", "status", "code"),
    [
        ({}, "demo", 401, "TOKEN_INVALID"),
        ({"Authorization": "Basic abc"}, "demo", 401, "TOKEN_INVALID"),
        ({"Authorization": "Bearer"}, "demo", 401, "TOKEN_INVALID"),
        ({"Authorization": "Bearer wrong-secret"}, "demo", 403, "FORBIDDEN"),
        ({"Authorization": f"Bearer {OTHER_SECRET}"}, "demo", 403, "FORBIDDEN"),  # other app
        ({"Authorization": f"Bearer {OTHER_SECRET}"}, "nosuch", 403, "FORBIDDEN"),
        ({"Authorization": f"Bearer {OPERATOR_KEY}"}, "nosuch", 404, "NOT_FOUND"),
    ],
)
def test_auth(server: Any, headers: dict[str, str], app: str, status: int, code: str) -> None:
    r = httpx.get(f"{server.http_url}/api/quality/apps/{app}/series", headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["name"] == code


def test_own_secret_and_operator_key_are_accepted(server: Any) -> None:
    for key, app in ((server.secret, "demo"), (OTHER_SECRET, OTHER_APP), (OPERATOR_KEY, "demo")):
        r = httpx.get(
            f"{server.http_url}/api/quality/apps/{app}/series",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
    r = httpx.post(
        f"{server.http_url}/api/quality/flush", headers={"Authorization": f"Bearer {server.secret}"}
    )
    assert r.status_code == 403  # flushing is for the operator only


@pytest.mark.parametrize(
    "params",
    [
        {"from": "yesterday"},
        {"from": "-1h", "to": "-2h"},
        {"step": "30"},
        {"step": "90"},
        {"step": "abc"},
        {"group": "user"},
        {"from": "-300d", "step": "60"},  # too many points
        {"region": "x" * 300},
    ],
)
def test_bad_parameters_are_400(server: Any, params: dict[str, str]) -> None:
    r = httpx.get(
        f"{server.http_url}/api/quality/apps/demo/series",
        params=params,
        headers={"Authorization": f"Bearer {server.secret}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["name"] == "INVALID_ARGUMENT"


def test_bad_worst_and_limit(server: Any) -> None:
    h = {"Authorization": f"Bearer {server.secret}"}
    base = f"{server.http_url}/api/quality/apps/demo"
    assert httpx.get(f"{base}/worst", params={"by": "nope"}, headers=h).status_code == 400
    assert httpx.get(f"{base}/traces", params={"limit": "0"}, headers=h).status_code == 400
    assert httpx.get(f"{base}/connections", params={"limit": "x"}, headers=h).status_code == 400


async def test_metrics_parse_and_have_no_per_user_labels(server: Any) -> None:
    await _traffic(server)
    text = httpx.get(f"{server.http_url}/metrics").text
    allowed = {"node", "region", "stage", "reason", "outcome", "field", "kind", "le"}
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample
            assert sample.labels["node"] == NODE and sample.labels["region"] == REGION
            key = sample.name + "".join(
                f",{k}={v}" for k, v in sorted(sample.labels.items()) if k not in ("node", "region")
            )
            seen[key] = sample.value
    for needle in ("ann", "ben", "a1", "b1", "eu", "us", "wifi"):
        assert f'"{needle}"' not in text
    assert seen["relaydesk_messages_sent_total"] == 6
    assert seen["relaydesk_probes_rejected_total,reason=rtt_negative"] == 1
    assert seen["relaydesk_probes_rejected_total,reason=loss_range"] == 1
    assert seen["relaydesk_probes_rejected_total,reason=future"] == 1
    assert seen["relaydesk_telemetry_labels_bounded_total,kind=truncated"] == 0
    assert seen["relaydesk_stage_latency_seconds_count,stage=commit"] == 6
    assert seen["relaydesk_connects_total"] == 2
