"""Diagnosis scenarios reproduced for real: a running server, real clients, faults injected
through configuration; the diagnosis reads the telemetry the server itself recorded.

* scenario 2 (delay from a conservative setting): ``storage.commit_batch_max = 1`` with
  ``storage.sync = "full"`` under pipelined publishing from 16 connections: every publish
  is its own fsynced transaction, so publishes queue for the writer (commit_wait) while
  each commit stays fast.  The diagnosis must name ``storage.commit_batch_max``.
* clean run: the same traffic at default settings: no finding above the threshold.
* auto-acknowledgement, in both: a ticket filed through the server's desk API for the
  window is acknowledged (internal note + public comment, ``acknowledged_at`` set,
  ``first_response_at`` not set, priority unchanged) within 10 seconds, its note holding
  the same top finding (or none); with ``RELAYDESK_SCENARIO_RECORD`` set the figures are
  recorded (``diagnosis_kit.record_scenario``).

Everything runs in the server: the test asks its diagnosis API and files the ticket
through its desk API; the node's own auto-acknowledger answers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from diagnosis_kit import (
    NO_FINDING,
    desk_key,
    diagnose,
    diagnose_cli,
    file_ticket,
    record_scenario,
)
from quality_kit import login, telemetry_config

import relaydesk
from relaydesk.protocol.frames import Publish

PUBLISHERS = 16
PER_PUBLISHER = 150
RESULTS: dict[str, Any] = {}


async def _load(server: Any) -> None:
    """16 raw publishers pipelining into a channel read by two acknowledging SDK devices."""
    users = [f"p{i}" for i in range(PUBLISHERS)] + ["sub1", "sub2"]
    server.add_members(users)
    expected = PUBLISHERS * PER_PUBLISHER
    got = {"sub1": 0, "sub2": 0}

    async def subscribe(user: str) -> None:
        async with relaydesk.connect(
            server.ws_url, server.token(user), device=f"{user}-d", region="eu-west"
        ) as client:
            async for ev in client.events():
                if getattr(ev, "body", None) is not None:
                    got[user] += 1
                if got[user] >= expected:
                    await asyncio.sleep(1.0)  # let the last ack go out
                    return

    subs = [asyncio.create_task(subscribe(u)) for u in ("sub1", "sub2")]
    await asyncio.sleep(1.0)

    async def publish(i: int) -> None:
        raw = await login(server.ws_url, server.token(f"p{i}"), f"p{i}-d", region="eu-west")
        for n in range(PER_PUBLISHER):
            await raw.send(Publish(id=f"p{i}-{n}", to="channel:room", body=b"x" * 64))
        acks = 0
        while acks < PER_PUBLISHER:
            frame = await raw.recv(timeout=60)
            acks += type(frame).__struct_config__.tag == "puback"
        await raw.aclose()

    await asyncio.gather(*(publish(i) for i in range(PUBLISHERS)))
    await asyncio.wait_for(asyncio.gather(*subs), timeout=90)


def _diagnose(server: Any, start_ms: int) -> tuple[dict[str, Any], float]:
    t = time.perf_counter()
    d = diagnose(server, start_ms, "delay", region="eu-west")
    return d, time.perf_counter() - t


@pytest.mark.slow
async def test_small_commit_batch_is_located_and_ticket_acknowledged(
    make_server: Callable[..., Any],
) -> None:
    config = telemetry_config(trace_sample_every=10)
    config["storage"] = {"commit_batch_max": 1, "sync": "full"}
    server = make_server(config)
    start_ms = int(time.time() * 1000) - 60_000
    await _load(server)
    diagnosis, elapsed = _diagnose(server, start_ms)
    top = diagnosis["findings"][0]
    RESULTS["scenario2"] = (top["layer"], top["setting"], elapsed)
    print(f"\nscenario 2: {top['title']} ({top['confidence']}); diagnosis {elapsed * 1000:.0f} ms")
    assert top["layer"] == "server_config", [f["title"] for f in diagnosis["findings"]]
    assert top["setting"] == "storage.commit_batch_max"
    assert top["suggested_value"] is not None and top["suggested_value"] >= 2000
    assert "from 1 to" in top["action"]
    assert any(a["slug"] == "capacity-settings" for a in diagnosis["articles"])

    # A customer files a ticket through the server's desk API; the node's own
    # acknowledger answers within 10 seconds.
    ack = await asyncio.to_thread(
        file_ticket,
        server,
        subject="Messages arrive late under load",
        description="Latency went up to seconds during our load test.",
        start_ms=start_ms,
        region="eu-west",
    )
    found = ack.top
    locus = found.title if found is not None else ""
    record_scenario(
        "2",
        "delay from a small setting",
        ack,
        expected_layer="server_config",
        locus_ok=found is not None
        and "storage.commit_batch_max = 1" in found.title
        and "from 1 to" in found.action,
        locus=locus,
    )
    RESULTS["ack_s"] = ack.seconds
    print(f"ticket {ack.ticket_id} acknowledged in {ack.seconds:.2f} s: {locus}")
    assert ack.seconds < 10 and ack.waited_s < 10
    assert found is not None and found.layer == "server_config", ack.note
    assert "storage.commit_batch_max = 1" in found.title and "from 1 to" in found.action
    ticket = ack.ticket
    assert ticket["first_response_at"] is None and ticket["priority"] == "P2"
    public = [c for c in ack.customer_view["comments"] if c["public"]]
    assert len(public) == 1 and public[0]["author_kind"] == "automation"
    assert "storage.commit_batch_max" in public[0]["body"]
    assert "/console/kb/capacity-settings" in public[0]["body"]
    assert not [c for c in ack.customer_view["comments"] if not c["public"]]  # no notes


@pytest.mark.slow
async def test_clean_run_raises_no_alarm(make_server: Callable[..., Any]) -> None:
    server = make_server(telemetry_config(trace_sample_every=10))
    start_ms = int(time.time() * 1000) - 60_000
    await _load(server)
    diagnosis, elapsed = _diagnose(server, start_ms)
    findings = [(f["title"], f["confidence"]) for f in diagnosis["findings"]]
    print(
        f"\nclean run: {findings}; "
        f"{diagnosis['minutes']} rows, {diagnosis['traces']} traces, {elapsed * 1000:.0f} ms"
    )
    assert diagnosis["minutes"] > 0 and diagnosis["traces"] > 0
    threshold = diagnosis["low_confidence_threshold"]
    assert [t for t, c in findings if c >= threshold] == [], findings

    ack = await asyncio.to_thread(
        file_ticket,
        server,
        subject="Messages arrive late under load",
        description="Latency went up to seconds during our load test.",
        start_ms=start_ms,
        region="eu-west",
    )
    shown = [f"{f.layer}: {f.title}" for f in ack.findings if f.shown]
    record_scenario(
        "clean",
        "healthy window",
        ack,
        expected_layer=NO_FINDING,
        locus_ok=shown == [],
        locus="; ".join(shown) or f"no finding >= {threshold}",
    )
    print(f"ticket {ack.ticket_id} acknowledged in {ack.seconds:.2f} s: {shown}")
    assert ack.seconds < 10 and ack.waited_s < 10
    assert ack.top is None and shown == [], ack.note
    assert ack.ticket["priority"] == "P2" and not ack.note.startswith("Priority suggestion")
    assert "/console/kb/message-delay" in ack.public  # the symptom's checklist

    # `relaydesk diagnose`: exit 0 on a healthy window, 2 when the call fails, 3 no data.
    def cli(*args: str) -> Any:
        return diagnose_cli("--app", server.app, "--from", str(start_ms), "--url", *args)

    ok = await asyncio.to_thread(cli, server.http_url, "--key", desk_key(server, "agent:alice"))
    assert ok.exit_code == 0 and "no finding" in ok.output.lower(), ok.output
    denied = await asyncio.to_thread(cli, server.http_url, "--key", "not-a-key")
    assert denied.exit_code == 2 and "auth." in denied.output, denied.output
    down = await asyncio.to_thread(cli, "http://127.0.0.1:9", "--key", "k")
    assert down.exit_code == 2 and "cannot reach" in down.output, down.output
    # an app nothing was recorded for: "no data", exit 3 — never "found no problem"
    key = desk_key(server, "agent:alice")
    nope = await asyncio.to_thread(
        diagnose_cli, "--app", "nope", "--url", server.http_url, "--key", key
    )
    assert nope.exit_code == 3 and "no data for app 'nope'" in nope.output, nope.output
