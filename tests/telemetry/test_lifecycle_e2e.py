"""Message lifecycle against a real server and raw protocol clients.

One publisher and three subscribers in a channel: A acknowledges everything,
B receives and never acknowledges, C receives and disconnects without
acknowledging.  The aggregates must match those known numbers exactly, and every
sampled trace's stages must add up to its end-to-end time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from quality_kit import flush, login, msg_events, operator, series, telemetry_config

from relaydesk.protocol.frames import Ack, Publish

N = 12


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_aggregates_match_known_counts_and_traces_add_up(
    make_server: Callable[..., Any],
) -> None:
    server = make_server(telemetry_config())
    server.add_members(["pub", "alice", "bob", "carol"])
    url = server.ws_url
    pub = await login(url, server.token("pub"), "p1", region="eu")
    alice = await login(url, server.token("alice"), "a1", region="eu")
    bob = await login(url, server.token("bob"), "b1", region="us")
    carol = await login(url, server.token("carol"), "c1", region="us")

    for i in range(N):
        await pub.send(Publish(id=f"m{i}", to="channel:room", body=b"x" * 20))
    await pub.send(Publish(id="nope", to="channel:secret", body=b"x"))  # not a member
    pubacks = errors = 0
    while pubacks + errors < N + 1:
        frame = await pub.recv()
        tag = type(frame).__struct_config__.tag
        pubacks += tag == "puback"
        errors += tag == "error"
    assert (pubacks, errors) == (N, 1)

    for raw in (pub, alice, bob, carol):
        while len(msg_events(raw)) < N:
            await raw.recv()
    # The publisher's own device and alice acknowledge; bob never does; carol leaves.
    await pub.send(Ack(pos=pub.events[-1].pos))
    await alice.send(Ack(pos=alice.events[-1].pos))
    await carol.aclose()

    # Past the ack deadline (1.5 s) plus the once-a-second expiry tick.
    await asyncio.sleep(3.0)
    flush(server)

    # Deliveries are feed events: the N messages plus the channel's join events
    # each device caught up on at login (pub joined first and sees all four).
    got = {
        name: len(raw.events)
        for name, raw in (("pub", pub), ("alice", alice), ("bob", bob), ("carol", carol))
    }
    assert got == {"pub": N + 4, "alice": N + 3, "bob": N + 2, "carol": N + 1}
    total = series(server, group="none")["series"][0]["total"]
    assert total["sent"] == N
    assert total["send_errors"] == 1
    assert total["delivered"] == got["pub"] + got["alice"]
    assert total["undelivered"] == got["bob"] + got["carol"]  # deadline; closed
    assert total["late"] == 0
    assert total["deliveries"] == sum(got.values())
    assert total["delivery_success"] == round((2 * N + 7) / (4 * N + 10), 6)
    assert abs(total["send_success"] - N / (N + 1)) < 1e-6
    assert total["connects"] == 4
    assert total["disconnects"]["client_close"] == 1, total["disconnects"]
    assert total["active"] == 4
    for stage in ("commit_wait", "commit", "fanout", "server", "queue_wait", "client_ack"):
        assert total["latency_ms"][stage]["n"] > 0, stage
    # Live messages were written to all four connections; in-time acks cover the
    # live messages and the caught-up joins of two of them.
    assert total["latency_ms"]["queue_wait"]["n"] == 4 * N
    assert total["latency_ms"]["client_ack"]["n"] == 2 * N + 7
    assert total["traces"] == N

    # Per client region: us = bob + carol (all undelivered), eu = pub + alice.
    by_region = {
        s["client_region"]: s["total"] for s in series(server, group="client_region")["series"]
    }
    assert by_region["us"]["undelivered"] == 2 * N + 3 and by_region["us"]["delivered"] == 0
    assert by_region["eu"]["delivered"] == 2 * N + 7 and by_region["eu"]["sent"] == N

    with operator(server) as http:
        rows = http.get(
            f"/api/quality/apps/{server.app}/traces", params={"from": "-10m", "limit": 1000}
        ).json()
    assert len(rows) == 4 * N  # one row per message and recipient connection
    outcomes: dict[str, int] = {}
    for row in rows:
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
        if row["outcome"] == "acked":
            stages = (
                row["commit_wait_ms"]
                + row["commit_ms"]
                + row["fanout_ms"]
                + row["queue_wait_ms"]
                + row["client_ack_ms"]
            )
            assert abs(stages - row["end_to_end_ms"]) <= 0.005, row
            assert (
                min(
                    row["commit_wait_ms"],
                    row["commit_ms"],
                    row["fanout_ms"],
                    row["queue_wait_ms"],
                    row["client_ack_ms"],
                )
                >= 0
            )
    assert outcomes == {"acked": 2 * N, "unacked": N, "closed": N}

    for raw in (pub, alice, bob):
        await raw.aclose()
    await asyncio.sleep(0.5)
    flush(server)
    with operator(server) as http:
        history = http.get(
            f"/api/quality/apps/{server.app}/connections", params={"from": "-10m"}
        ).json()
    assert len(history) == 4
    assert {h["reason"] for h in history} == {"client_close"}
    carol_row = next(h for h in history if h["device"] == "c1")
    assert carol_row["undelivered"] == N + 1 and carol_row["client_region"] == "us"
    alice_row = next(h for h in history if h["device"] == "a1")
    assert alice_row["delivered"] == N + 3


async def test_disconnect_reasons_and_resume(make_server: Callable[..., Any]) -> None:
    server = make_server(
        {**telemetry_config(), "gateway": {"heartbeat_timeout_ms": 1500, "heartbeat_ms": 500}}
    )
    quiet = await login(server.ws_url, server.token("dan"), "d1", region="ap")
    resumed = await login(server.ws_url, server.token("eve"), "e1", region="ap")
    await resumed.aclose()
    from quality_kit import Raw  # the kit puts tests/server on the path

    again = await Raw.login(server.ws_url, server.token("eve"), device="e1", cursor=0)
    await again.aclose()
    # A link reset (TCP RST, no closing handshake) is a transport error, not a goodbye.
    reset = await Raw.login(server.ws_url, server.token("fay"), device="f1")
    reset.ws.transport.abort()
    code, _ = await quiet.closed(timeout=6)  # never pings: heartbeat timeout
    assert code == 4050
    await asyncio.sleep(0.5)
    flush(server)
    total = series(server, group="none")["series"][0]["total"]
    assert total["connects"] == 4
    assert total["resumes"] == 1
    assert total["disconnects"]["heartbeat_timeout"] == 1
    assert total["disconnects"]["transport_error"] == 1
    assert total["disconnects"]["client_close"] == 2
    assert total["unexpected_disconnects"] == 2
    with httpx.Client(base_url=server.http_url) as http:
        text = http.get("/metrics").text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith("relaydesk_disconnects_total") and "heartbeat_timeout" in x
    )
    assert float(line.rsplit(" ", 1)[1]) == 1.0
