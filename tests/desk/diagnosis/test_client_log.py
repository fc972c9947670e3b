"""The ``client_log`` rule: a reconnect loop as the device's own SDK log tells it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diag_kit import T0, conn

from relaydesk.desk.diagnosis import Snapshot, diagnose
from relaydesk.desk.diagnosis.model import ClientLogEntry, ClientReport, Finding
from relaydesk.desk.diagnosis.rules import client_log

NODE = "ws://edge-1.example/v1/ws"


def _loop(n: int, close: int | None, *, life_ms: int = 2_000, wait_ms: int = 500,
          refused: int = 0) -> list[ClientLogEntry]:  # fmt: skip
    log, t = [], T0
    for _ in range(n):
        for _ in range(refused):
            log.append(ClientLogEntry(t, "connect_failed", NODE, detail="ConnectionRefusedError"))
            log.append(ClientLogEntry(t, "reconnect_wait", value_ms=wait_ms))
            t += wait_ms
        log.append(ClientLogEntry(t, "connect", NODE))
        log.append(ClientLogEntry(t, "rtt", NODE, value_ms=40.0))
        t += life_ms
        log.append(ClientLogEntry(t, "close", NODE, code=close, value_ms=life_ms))
        log.append(ClientLogEntry(t, "reconnect_wait", value_ms=wait_ms))
        t += wait_ms
    return log


def _run(log: list[ClientLogEntry], **kw: object) -> list[Finding]:
    snap = Snapshot(
        app="acme", from_ms=T0, to_ms=T0 + 600_000,
        client_reports=[ClientReport(device="phone-1", log=log)], **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return [f for f in client_log(snap) if isinstance(f, Finding)]


def test_links_dying_on_the_device_are_its_network() -> None:
    [f] = _run(_loop(6, None, refused=2))
    assert f.layer == "network" and f.device == "phone-1" and f.confidence >= 0.6
    assert "keep dying" in f.title and "12 attempts refused" in f.title
    closes = next(e for e in f.evidence if e.metric.startswith("closes by code"))
    assert "no close frame: 6" in str(closes.value)


def test_a_device_that_never_gets_through_cannot_reach_the_node() -> None:
    log = [ClientLogEntry(T0 + i * 1000, "connect_failed", NODE, detail="TimeoutError: x")
           for i in range(8)]  # fmt: skip
    [f] = _run(log)
    assert f.layer == "network" and "cannot reach" in f.title and f.confidence == 0.7


def test_expired_tokens_are_the_clients() -> None:
    [f] = _run(_loop(6, 4011))
    assert f.layer == "client" and "token" in f.title and f.confidence == 0.85


def test_another_close_code_is_named() -> None:
    [f] = _run(_loop(6, 4003))
    assert f.layer == "client" and "4003" in f.title


def test_short_sessions_closed_on_purpose_are_no_loop() -> None:
    snap = Snapshot(
        app="acme", from_ms=T0, to_ms=T0 + 600_000,
        client_reports=[ClientReport(device="cli-send", log=_loop(8, 1000))],
    )  # fmt: skip
    [rejected] = client_log(snap)
    assert not isinstance(rejected, Finding) and "normally" in rejected.reason
    assert diagnose(snap).public == []


def test_a_drain_is_no_loop_and_slow_reconnects_are_not_either() -> None:
    assert _run(_loop(6, 4061)) == []  # moved: the SDK went to another node on purpose
    assert _run(_loop(6, None, wait_ms=60_000)) == []  # comes back once a minute


def test_the_devices_own_log_decides_over_the_servers_view() -> None:
    conns = [conn("phone-1", T0 + i * 3000, T0 + i * 3000 + 2000, "transport_error")
             for i in range(6)]  # fmt: skip
    snap = Snapshot(
        app="acme", from_ms=T0, to_ms=T0 + 600_000, connections=conns,
        client_reports=[ClientReport(device="phone-1", log=_loop(6, None))],
    )  # fmt: skip
    d = diagnose(snap)
    assert [f.rule for f in d.findings if f.device == "phone-1"] == ["client_log"]
    assert any(r.rule == "reconnect_loop" and "client_log" in r.reason for r in d.rejected)
