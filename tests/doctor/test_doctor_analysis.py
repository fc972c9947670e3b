"""Pure judgements of the doctor: skew, RTT/loss statistics, SDK lint, report rendering."""

from __future__ import annotations

import json

import pytest

import relaydesk.doctor as doctor
from relaydesk.doctor import (
    CheckResult,
    DoctorReport,
    EdgeProbe,
    PongSample,
    SdkConfig,
    edges_status,
    estimate_skew,
    lint_sdk_config,
    percentile,
    report_markdown,
    summarise_probes,
)
from relaydesk.doctor.analysis import lint_status, probe_status, skew_status


def test_public_names_are_pinned() -> None:
    assert set(doctor.__all__) >= {"run_doctor", "DoctorReport", "CheckResult", "SdkConfig"}
    assert all(hasattr(doctor, name) for name in doctor.__all__)


def test_skew_uses_the_fastest_round_trip() -> None:
    samples = [
        PongSample(sent_ms=1000.0, received_ms=1400.0, server_ms=61_300, rtt_ms=400.0),
        PongSample(sent_ms=2000.0, received_ms=2010.0, server_ms=62_005, rtt_ms=10.0),
    ]
    est = estimate_skew(samples)
    assert est is not None
    assert est.offset_ms == pytest.approx(60_000.0)
    assert est.uncertainty_ms == 5.0
    assert estimate_skew([]) is None


@pytest.mark.parametrize(
    ("offset_ms", "status"),
    [(0, "pass"), (1999, "pass"), (-2500, "warn"), (29_000, "warn"), (30_500, "fail")],
)
def test_skew_thresholds(offset_ms: float, status: str) -> None:
    est = estimate_skew([PongSample(0.0, 2.0, int(1.0 + offset_ms), 2.0)])
    assert est is not None
    got, reason = skew_status(est)
    assert got == status
    assert ("ahead of" in reason) == (offset_ms > 0) or offset_ms == 0


def test_percentiles_interpolate() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([3.0], 95) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_probe_summary_and_status() -> None:
    s = summarise_probes(20, [10.0] * 19)
    assert s.loss == 0.05 and s.rtt_p50_ms == 10.0
    assert probe_status(s)[0] == "warn"
    assert probe_status(summarise_probes(10, [5.0] * 10))[0] == "pass"
    assert probe_status(summarise_probes(10, [5.0] * 8))[0] == "fail"  # 20% loss
    assert probe_status(summarise_probes(10, []))[0] == "fail"
    slow = summarise_probes(10, [600.0] * 10)
    assert probe_status(slow)[0] == "warn"


def test_default_sdk_config_is_clean() -> None:
    found = lint_sdk_config(SdkConfig(), server_heartbeat_s=10, server_timeout_s=30, rtt_p95_s=0.05)
    assert found == []
    assert lint_status(found)[0] == "pass"


def test_lint_flags_each_problem() -> None:
    def settings(**kw: object) -> set[str]:
        cfg = SdkConfig(**kw)  # type: ignore[arg-type]
        return {f.setting for f in lint_sdk_config(cfg, server_heartbeat_s=10, server_timeout_s=30)}

    assert settings(timeout_s=15.0) == {"timeout_s"}  # < 2 x 10 s
    assert settings(heartbeat_s=40.0, timeout_s=100.0) == {"heartbeat_s"}  # server drops it
    assert settings(reconnect_max_s=0.5) == {"reconnect_max_s"}
    assert settings(reconnect_base_s=2.0, reconnect_max_s=1.0) == {"reconnect_base_s"}
    assert settings(outbox_limit=None) == {"outbox_limit"}
    assert settings(buffer_limit=0) == {"buffer_limit"}
    assert settings(reconnect_max_attempts=1) == {"reconnect_max_attempts"}
    assert settings(connect_timeout_s=1.0) == {"connect_timeout_s"}
    fail = lint_sdk_config(SdkConfig(timeout_s=5.0), server_heartbeat_s=10, server_timeout_s=30)
    assert lint_status(fail)[0] == "fail"
    slow = lint_sdk_config(SdkConfig(), server_heartbeat_s=10, server_timeout_s=30, rtt_p95_s=2.0)
    assert [f.setting for f in slow] == ["open_timeout_s"]


def _report(reason: str = "ok", data: dict[str, object] | None = None) -> DoctorReport:
    return DoctorReport(
        url="ws://h/v1/ws",
        created_at="2024-05-01T12:00:00+00:00",
        sdk_version="0.1.0",
        status="fail",
        checks=[
            CheckResult("tcp", "pass", reason, data or {"connect_ms": 1.0}),
            CheckResult("login", "fail", "TOKEN_INVALID: bad token signature"),
        ],
    )


def test_markdown_has_a_table_and_the_json() -> None:
    text = report_markdown(_report())
    assert "| Login | FAIL | TOKEN_INVALID: bad token signature |" in text
    fenced = text.split("```json\n", 1)[1].rsplit("\n```", 1)[0]
    assert json.loads(fenced)["checks"][0]["data"] == {"connect_ms": 1.0}


def test_markdown_stays_under_the_desk_limit() -> None:
    text = report_markdown(_report(data={"blob": "x" * 50_000}))
    assert len(text) <= 19_000 and '"data": {}' in text
    text = report_markdown(_report(reason="y" * 50_000))
    assert len(text) <= 19_000 and text.endswith("(truncated)\n```")


def _edge(rank: int, node: str, rtt: float | None) -> EdgeProbe:
    return EdgeProbe(rank=rank, node=node, url=f"ws://{node}/v1/ws", region="r", rtt_ms=rtt)


def test_edges_judgement_compares_the_ranking_with_measured_rtts() -> None:
    status, reason = edges_status([_edge(1, "near", 5.0), _edge(2, "far", 90.0)], 1)
    assert status == "pass" and "1. near (r, 5.0 ms), 2. far (r, 90.0 ms); 1 left out" == reason
    status, reason = edges_status([_edge(1, "far", 90.0), _edge(2, "near", 5.0)], 0)
    assert status == "warn" and reason.startswith("near answers much faster")
    # within 2x or 30 ms: a ranking may weigh load and health over a few ms
    assert edges_status([_edge(1, "a", 20.0), _edge(2, "b", 8.0)], 0)[0] == "pass"
    assert edges_status([_edge(1, "a", None), _edge(2, "b", 8.0)], 0)[0] == "warn"
    assert edges_status([_edge(1, "a", None)], 0)[0] == "fail"
    assert edges_status([], 2) == ("fail", "the directory offered no node (2 left out)")
