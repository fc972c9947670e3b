"""A doctor report as the diagnosis' client evidence: measured by the real doctor against a
real server, carried in a ticket's text, read back, and judged with its error bound."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_doctor import FAST, OffsetClock

from relaydesk.cli.diagnose import diagnose as diagnose_command
from relaydesk.desk.diagnosis import Snapshot, diagnose
from relaydesk.desk.diagnosis.client_evidence import client_report, reports_in_text
from relaydesk.doctor import (
    AttachError,
    CheckResult,
    DoctorReport,
    load_report,
    report_markdown,
    run_doctor,
    with_report,
)

T0 = 1_709_546_400_000


async def test_a_skew_under_the_probe_rejection_bound_reaches_the_diagnosis(
    running_server: Any,
) -> None:
    # 4 minutes fast: under the 5-minute bound at which the server rejects probes
    report = await run_doctor(
        running_server.ws_url,
        running_server.token("alice"),
        options=FAST,
        clock=OffsetClock(240.0),
    )
    assert report.connection_log and any("clock_skew" in line for line in report.connection_log)
    text = with_report("Tokens fail on one phone.", report)
    [evidence] = reports_in_text([text])
    assert evidence.clock_skew_ms == pytest.approx(240_000, abs=250)  # device minus server
    assert evidence.clock_error_ms is not None and evidence.clock_error_ms < 250
    snap = Snapshot(app="acme", from_ms=T0, to_ms=T0 + 60_000, client_reports=[evidence])
    d = diagnose(snap)
    top = d.findings[0]
    assert top.rule == "clock_skew" and top.layer == "client" and top in d.public
    assert "+240" in top.title and "NTP" in (top.customer_step or "")


def _report(offset_ms: float, uncertainty_ms: float, **kw: Any) -> DoctorReport:
    checks = [
        CheckResult(
            "clock_skew",
            "warn",
            "x",
            {"offset_ms": offset_ms, "uncertainty_ms": uncertainty_ms, "rtt_ms": 2.0},
        ),
        CheckResult("rtt_loss", "fail", "y", {"loss": 0.3, "rtt_p50_ms": 40.0, "rtt_p95_ms": 90.0}),
        CheckResult(
            "sdk_config",
            "warn",
            "z",
            {"findings": [{"severity": "warn", "setting": "heartbeat_s", "message": "too long"}]},
        ),
    ]
    fields: dict[str, Any] = {
        "url": "ws://x/v1/ws",
        "created_at": "2024-03-04T10:00:00+00:00",
        "sdk_version": "0.1.0",
        "status": "fail",
        "checks": checks,
        "device": "phone-1",
    }
    fields.update(kw)
    return DoctorReport(**fields)


def test_report_fields_become_evidence() -> None:
    doc = msgspec.to_builtins(_report(-3000.0, 1.0))
    ev = client_report(doc)
    assert ev is not None and ev.device == "phone-1" and ev.clock_skew_ms == 3000.0
    assert ev.loss == 0.3 and ev.rtt_p95_ms == 90.0 and ev.failed == ["rtt_loss"]
    assert ev.lint == ["heartbeat_s: too long"]
    d = diagnose(Snapshot(app="a", from_ms=T0, to_ms=T0 + 1, client_reports=[ev]))
    assert {f.rule for f in d.public} == {"clock_skew", "client_lint"}
    assert {f.layer for f in d.public} == {"client", "network"}


def test_text_without_a_report_yields_nothing_and_the_last_report_wins() -> None:
    assert reports_in_text(["my app is broken", "```json\n{not json}\n```", '{"a": 1}']) == []
    older = report_markdown(_report(-1000.0, 1.0))
    newer = report_markdown(_report(-5000.0, 1.0))
    [ev] = reports_in_text([older, newer])
    assert ev.clock_skew_ms == 5000.0


def test_a_long_description_keeps_the_report_within_the_desk_limit() -> None:
    text = with_report("x" * 15_000, _report(1.0, 1.0))
    assert len(text) <= 20_000 and reports_in_text([text])
    with pytest.raises(AttachError, match="no room"):
        with_report("x" * 19_800, _report(1.0, 1.0))


def test_load_report_explains_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "r.json"
    good.write_bytes(msgspec.json.encode(_report(1.0, 1.0)))
    assert load_report(good).device == "phone-1"
    bad = tmp_path / "bad.json"
    bad.write_text('{"checks": 3}')
    with pytest.raises(AttachError, match="not a doctor report"):
        load_report(bad)
    with pytest.raises(AttachError, match="cannot read"):
        load_report(tmp_path / "missing.json")


def test_desk_create_refuses_an_unreadable_report_before_filing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("nope")
    result = subprocess.run(
        [sys.executable, "-m", "relaydesk", "desk", "create", "--subject", "s", "--api-key",
         "k", "--url", "http://127.0.0.1:1", "--attach-doctor", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # refused before any request: a node at port 1 would have been "cannot reach"
    assert result.returncode == 2 and "not JSON" in result.stderr, result.stderr


def test_diagnose_takes_a_doctor_report_file(running_server: Any, tmp_path: Path) -> None:
    """`relaydesk diagnose --doctor-report FILE`: the device's evidence is judged even when
    the node recorded nothing for the window (the report is data)."""
    keys = re.findall(r"desk key\s+agent:alice\s+(\S+)", running_server.log_path.read_text())
    path = tmp_path / "doctor.json"
    path.write_bytes(msgspec.json.encode(_report(-4000.0, 2.0)))  # the phone is 4 s ahead
    app = typer.Typer()
    app.command()(diagnose_command)
    args = ["--app", "nope", "--url", running_server.http_url, "--key", keys[-1]]
    result = CliRunner().invoke(app, [*args, "--doctor-report", str(path)])
    assert result.exit_code == 1, result.output
    assert "phone-1" in result.output and "+4.0 s" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = CliRunner().invoke(app, [*args, "--doctor-report", str(bad)])
    assert result.exit_code == 2 and "not a doctor report" in result.output
