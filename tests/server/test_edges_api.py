"""Node registry, edge directory and drain flag on a real node (HTTP and CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import websockets
from raw_client import Raw

from relaydesk.protocol.frames import Hello, Publish

OPERATOR = "operator-key-for-tests-0123456789"


def node(make_server: Callable[..., Any]) -> Any:
    return make_server(
        config={
            "server": {"node_id": "edge-t1", "region": "eu-west", "capacity": 100},
            "telemetry": {"operator_key": OPERATOR},
            "cluster": {"node_heartbeat_ms": 200},
        }
    )


def cli(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    return subprocess.run(
        [sys.executable, "-m", "relaydesk", "node", *args, "--url", server.http_url],
        env={**env, "RELAYDESK_OPERATOR_KEY": OPERATOR},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_node_registers_itself_and_ranks_for_its_region(
    make_server: Callable[..., Any],
) -> None:
    server = node(make_server)
    ops = {"Authorization": f"Bearer {OPERATOR}"}
    nodes = httpx.get(server.http_url + "/v1/nodes", headers=ops).json()
    assert [(n["node"], n["region"], n["draining"], n["alive"]) for n in nodes] == [
        ("edge-t1", "eu-west", False, True)
    ]
    assert nodes[0]["url"] == server.http_url and nodes[0]["capacity"] == 100

    token = server.token("alice")
    r = httpx.get(
        server.http_url + f"/v1/apps/{server.app}/edges",
        params={"region": "us-east"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["node"] for e in body["edges"]] == ["edge-t1"]
    edge = body["edges"][0]
    assert edge["url"] == server.ws_url
    assert any("london" in why and "propagation floor" in why for why in edge["why"])


def test_drain_and_undrain_from_the_cli_change_the_directory(
    make_server: Callable[..., Any],
) -> None:
    server = node(make_server)
    done = cli(server, "drain", "edge-t1", "--reason", "jitter at night")
    assert done.returncode == 0, done.stderr
    secret = {"Authorization": f"Bearer {server.secret}"}
    url = server.http_url + f"/v1/apps/{server.app}/edges"
    body = httpx.get(url, params={"region": "eu-west"}, headers=secret).json()
    assert body["edges"] == []
    assert body["excluded"] == [{"node": "edge-t1", "why": "draining"}]
    listed = cli(server, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"drain_reason": "jitter at night"' in listed.stdout

    assert cli(server, "undrain", "edge-t1").returncode == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = httpx.get(url, params={"region": "eu-west"}, headers=secret).json()
        if body["edges"]:
            break
        time.sleep(0.1)
    assert [e["node"] for e in body["edges"]] == ["edge-t1"]


def test_bad_credentials_unknown_nodes_and_bad_regions_get_clear_errors(
    make_server: Callable[..., Any],
) -> None:
    server = node(make_server)
    base = server.http_url
    assert httpx.get(base + "/v1/nodes").status_code == 401
    wrong = {"Authorization": f"Bearer {server.secret}"}  # an app secret is not the operator key
    assert httpx.get(base + "/v1/nodes", headers=wrong).status_code == 403
    assert httpx.post(base + "/v1/nodes/edge-t1/drain", json={}, headers=wrong).status_code == 403
    ops = {"Authorization": f"Bearer {OPERATOR}"}
    missing = httpx.post(base + "/v1/nodes/nope/drain", json={}, headers=ops)
    assert missing.status_code == 404 and missing.json()["error"]["name"] == "NOT_FOUND"
    other_app = server.token("mallory", app="other", secret="x" * 32)
    r = httpx.get(
        base + f"/v1/apps/{server.app}/edges",
        params={"region": "eu-west"},
        headers={"Authorization": f"Bearer {other_app}"},
    )
    assert r.status_code == 401
    r = httpx.get(
        base + f"/v1/apps/{server.app}/edges", params={"region": "eu west!"}, headers=wrong
    )
    assert r.status_code == 400
    failed = cli(server, "drain", "nope")
    assert failed.returncode == 1 and "NOT_FOUND" in failed.stderr


async def test_a_login_on_a_draining_node_is_moved_and_closed_at_once(
    make_server: Callable[..., Any],
) -> None:
    """A client that (re)connects to a draining node gets ``moved`` and the close
    right away, its closing handshake included, even with publishes pipelined
    behind its hello (as the SDK resends its outbox): a drain must not hold the
    client on the node it is leaving (the close used to wait out the 10 s close
    time-out when the login was refused)."""
    server = node(make_server)
    assert cli(server, "drain", "edge-t1", "--reason", "maintenance").returncode == 0
    deadline = time.monotonic() + 10
    for attempt in range(3):
        raw = await Raw.open(server.ws_url)
        started = time.monotonic()
        frames = [Hello(token=server.token("alice"), device=f"d{attempt}")]
        frames += [Publish(id=f"m{attempt}-{i}", to="user:bob", body=b"x") for i in range(attempt)]
        await raw.ws.send(b"".join(raw.codec.encode(f) for f in frames[:1]))
        for f in frames[1:]:
            await raw.send(f)
        try:
            moved = await raw.expect("moved")
        except (AssertionError, TimeoutError):
            assert time.monotonic() < deadline, "the node never refused the login"
            await raw.ws.close()
            continue  # the node has not seen its drain flag yet (heartbeat)
        assert moved.reason == "maintenance"
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            while True:
                await raw.recv(timeout=5)
        await asyncio.wait_for(raw.ws.wait_closed(), 5)
        assert raw.ws.close_code == 4061, raw.ws.close_code
        assert time.monotonic() - started < 3, "the closing handshake waited for a time-out"
