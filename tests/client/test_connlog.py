"""The SDK's connection log: a bounded ring of what the device saw (pure, no socket)."""

from __future__ import annotations

import pytest

from relaydesk.client import ConnectionLog


def test_the_ring_keeps_the_newest_entries_and_counts_the_dropped() -> None:
    log = ConnectionLog(limit=3)
    for i in range(5):
        log.connect_failed(1000 + i, "ws://a/v1/ws", f"refused {i}")
    assert [e.detail for e in log.entries()] == ["refused 2", "refused 3", "refused 4"]
    assert log.dropped == 2


def test_a_close_carries_its_code_and_the_session_lifetime() -> None:
    log = ConnectionLog()
    log.connected(1_000, 10.0, "ws://a/v1/ws")
    log.closed(3_500, 12.5, "ws://a/v1/ws", 4050, "heartbeat timeout")
    log.waiting(3_500, 0.25)
    log.closed(4_000, 13.0, "ws://a/v1/ws", None, "")  # no connect before: no lifetime
    connect, close, wait, orphan = log.entries()
    assert connect.kind == "connect" and close.kind == "close"
    assert close.code == 4050 and close.value_ms == 2500 and close.detail == "heartbeat timeout"
    assert wait.kind == "reconnect_wait" and wait.value_ms == 250
    assert orphan.value_ms is None and orphan.code is None


def test_rtt_samples_are_thinned_so_they_cannot_crowd_out_the_closes() -> None:
    log = ConnectionLog(rtt_every_s=30.0)
    for second in range(0, 95, 5):  # a heartbeat every 5 s
        log.rtt(second * 1000, float(second), "ws://a/v1/ws", 0.020)
    assert [e.t_ms for e in log.entries()] == [0, 30_000, 60_000, 90_000]
    assert log.entries()[0].value_ms == 20.0


def test_a_ring_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLog(limit=0)
