"""The listener's limits (docs/desk.md, "HTTP limits") against a real node and real sockets.

Header and body timeouts, header size, idle keep-alive, connections per client address
(HTTP and upgraded WebSocket alike) and the body size limit.  ``AddressLedger`` is pure
bookkeeping and is tested without sockets at the end.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from relaydesk.config import ConfigError, load_settings
from relaydesk.protocol.frames import SUBPROTOCOL_MSGPACK
from relaydesk.server.listener import FD_RESERVE, AddressLedger, connection_budget
from relaydesk.server.storage_setup import DEMO_SECRET

LIMITS = {
    "header_timeout_s": 1.0,
    "body_timeout_s": 1.0,
    "idle_timeout_s": 1,
    "max_header_bytes": 4096,
    "max_body_bytes": 64 * 1024,
    "max_connections_per_address": 3,
    "unlimited_addresses": [],
}


@contextmanager
def running_node(
    data: Path, config: str, preexec_fn: Callable[[], None] | None = None
) -> Iterator[Any]:
    """A ``relaydesk serve`` process on a free port with ``config`` as its TOML."""
    (data / "relaydesk.toml").write_text(config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    with (data / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaydesk",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--config",
                str(data / "relaydesk.toml"),
                "--demo",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            env=env,
            preexec_fn=preexec_fn,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
        try:
            if httpx.get(url + "/readyz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield SimpleNamespace(
            port=port,
            http_url=url,
            ws_url=f"ws://127.0.0.1:{port}/v1/ws",
            secret=DEMO_SECRET,
            log=data / "server.log",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One node for the module (each test leaves no connection behind)."""
    data = tmp_path_factory.mktemp("listener")
    config = "[http]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in LIMITS.items())
    with running_node(data, config) as n:
        yield n


@contextmanager
def raw(node: Any, source: str = "127.0.0.1") -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", node.port))
    try:
        yield s
    finally:
        s.close()


def read_until_closed(s: socket.socket, limit_s: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    start = time.monotonic()
    s.settimeout(limit_s)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data, time.monotonic() - start
        data += chunk


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_connection_that_sends_nothing_gets_408_after_the_header_timeout(node: Any) -> None:
    with raw(node) as s:
        data, took = read_until_closed(s)
    assert status_of(data) == 408, data
    assert 0.8 < took < 3.0


def test_trickled_headers_are_cut_off_at_the_header_timeout(node: Any) -> None:
    """Slowloris: a byte now and then does not extend the deadline."""
    with raw(node) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed_after = None
        for _ in range(20):
            time.sleep(0.2)
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed_after = time.monotonic() - start
                break
        if closed_after is None:
            data, _ = read_until_closed(s, 2.0)
            closed_after = time.monotonic() - start
            assert status_of(data) == 408
    assert closed_after < 2.5


def test_many_partial_header_connections_are_all_closed_and_the_node_keeps_serving(
    node: Any,
) -> None:
    """Slowloris from 300 addresses (one connection each, under the per-address cap)."""
    held = []
    for i in range(300):
        s = socket.socket()
        s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
        s.connect(("127.0.0.1", node.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(s)
    try:
        assert httpx.get(node.http_url + "/healthz", timeout=2).status_code == 200
        deadline = time.monotonic() + 4
        for s in held:
            data, _ = read_until_closed(s, max(0.1, deadline - time.monotonic()))
            assert status_of(data) == 408
        assert time.monotonic() < deadline
    finally:
        for s in held:
            s.close()


def test_headers_over_the_limit_get_431(node: Any) -> None:
    with raw(node) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n")
        data, _ = read_until_closed(s)
    assert status_of(data) == 431


def test_slow_body_gets_408_after_the_body_timeout(node: Any) -> None:
    with raw(node) as s:
        s.sendall(
            b"POST /v1/apps/demo/publish HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + node.secret.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"sender":'
        )
        data, took = read_until_closed(s)
    assert status_of(data) == 408, data
    assert 0.8 < took < 3.0
    assert httpx.get(node.http_url + "/healthz").status_code == 200  # the node is fine


def test_idle_keep_alive_connection_is_closed(node: Any) -> None:
    with raw(node) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, took = read_until_closed(s)
    assert status_of(data) == 200
    assert 0.8 < took < 3.0  # the response came at once; the close after the idle timeout


def test_a_complete_request_within_the_timeouts_is_served(node: Any) -> None:
    with raw(node) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.5)
        s.sendall(b"Connection: close\r\n\r\n")
        data, _ = read_until_closed(s)
    assert status_of(data) == 200 and b'"status":"ok"' in data


def test_connections_per_address_are_capped_and_others_still_served(node: Any) -> None:
    held = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    # An upgraded WebSocket keeps its place.
    ws = ws_connect(node.ws_url, subprotocols=[SUBPROTOCOL_MSGPACK], open_timeout=5)  # type: ignore[list-item]
    ws.__enter__()
    try:
        time.sleep(0.2)
        with raw(node) as fourth:
            data, took = read_until_closed(fourth)
        assert status_of(data) == 503 and b"too many connections" in data
        assert took < 0.5
        # Another address is not affected.
        with raw(node, source="127.0.0.2") as other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(other)
        assert status_of(data) == 200
        # Closing the WebSocket frees its place.
        ws.close()
        time.sleep(0.2)
        with raw(node) as again:
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(again)
        assert status_of(data) == 200
    finally:
        ws.__exit__(None, None, None)
        for s in held:
            s.close()


def logged(log: Path, text: str, within_s: float = 5.0) -> bool:
    """``text`` appears in the node's log within ``within_s`` (its writes are async)."""
    deadline = time.monotonic() + within_s
    while text not in log.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _open_files(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def test_node_refuses_past_its_open_file_budget_with_503_and_says_so(tmp_path: Path) -> None:
    """``relaydesk serve`` raises its soft open-file limit to the hard one and admits that
    many connections less FD_RESERVE (every address, 127.0.0.1 included); the next gets
    503 and the node logs why, instead of running out of descriptors (EMFILE), where the
    event loop would close new connections without a word."""
    hard = FD_RESERVE + 40
    with (
        running_node(tmp_path, "", preexec_fn=_open_files(FD_RESERVE, hard)) as n,
        ExitStack() as held,
    ):
        assert logged(n.log, f"up to 40 (open-file limit {hard})")
        time.sleep(0.5)  # the readiness probe's connection is closed and released
        first = socket.create_connection(("127.0.0.1", n.port))
        held.callback(first.close)
        for _ in range(39):
            held.enter_context(socket.create_connection(("127.0.0.1", n.port)))
        time.sleep(0.2)
        with raw(n) as refused:
            data, _ = read_until_closed(refused)
        assert status_of(data) == 503 and b"connection limit (40)" in data
        assert logged(n.log, "at the connection limit: 40 open")
        first.close()  # a place frees up
        time.sleep(0.2)
        with raw(n) as again:
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, _ = read_until_closed(again)
        assert status_of(data) == 200


def test_body_over_the_limit_is_413_in_each_api_shape(node: Any) -> None:
    big = b'{"sender":"a","to":"user:b","id":"x","text":"' + b"a" * 70_000 + b'"}'
    r = httpx.post(
        node.http_url + "/v1/apps/demo/publish",
        content=big,
        headers={"Authorization": f"Bearer {node.secret}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["name"] == "MESSAGE_TOO_LARGE"
    r = httpx.post(
        node.http_url + "/api/desk/sla/explain",
        content=b"x" * 70_000,
        headers={"Authorization": "Bearer rdk_unknown"},
    )
    assert r.status_code in (401, 413)  # authentication may run first; never 500


def test_unlimited_addresses_are_validated() -> None:
    with pytest.raises(ConfigError, match="localhost"):
        load_settings(None, {"http": {"unlimited_addresses": ["localhost"]}}, environ={})
    settings = load_settings(None, {"http": {"unlimited_addresses": ["10.0.0.1"]}}, environ={})
    assert settings.http.unlimited_addresses == ("10.0.0.1",)


def test_http_settings_come_from_the_environment_and_are_validated() -> None:
    env = {"RELAYDESK_HTTP_HEADER_TIMEOUT_S": "2.5", "RELAYDESK_HTTP_MAX_BODY_BYTES": "4096"}
    settings = load_settings(None, environ=env)
    assert (settings.http.header_timeout_s, settings.http.max_body_bytes) == (2.5, 4096)
    with pytest.raises(ConfigError, match="max_connections_per_address"):
        load_settings(None, environ={"RELAYDESK_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0"})


def test_ledger_caps_per_address_and_shares_an_upgraded_connection() -> None:
    ledger = AddressLedger(2, unlimited=["127.0.0.1"])
    a, b, c, d = object(), object(), object(), object()
    assert ledger.admit(a, "10.0.0.1") and ledger.admit(b, "10.0.0.1")
    assert not ledger.admit(c, "10.0.0.1") and ledger.refused == 1
    assert ledger.admit(a, "10.0.0.1")  # the same connection again (an upgrade): no new place
    assert ledger.admit(d, "10.0.0.2")
    assert all(ledger.admit(object(), "127.0.0.1") for _ in range(10))
    ledger.release(a)
    ledger.release(a)  # twice is harmless
    assert ledger.held("10.0.0.1") == 1 and ledger.admit(c, "10.0.0.1")


def test_ledger_caps_the_node_across_addresses_unlimited_ones_included() -> None:
    ledger = AddressLedger(2, unlimited=["127.0.0.1"], total=3)
    a, b, c, d = object(), object(), object(), object()
    assert ledger.admit(a, "127.0.0.1") and ledger.admit(b, "10.0.0.1")
    assert ledger.admit(c, None) and ledger.full and ledger.open == 3
    assert not ledger.admit(d, "127.0.0.1") and ledger.refused_full == 1
    assert not ledger.admit(d, "10.0.0.2") and ledger.refused == 0
    assert ledger.admit(a, "127.0.0.1")  # an upgrade of an admitted connection
    ledger.release(a)
    ledger.release(a)
    assert ledger.open == 2 and ledger.admit(d, "10.0.0.2") and ledger.held("10.0.0.2") == 1


def test_connection_budget_is_the_setting_or_the_open_file_limit_less_the_reserve() -> None:
    limits = load_settings(None, environ={}).http
    assert connection_budget(limits, 20_000) == 20_000 - FD_RESERVE
    assert connection_budget(limits, 10) == 1
    assert connection_budget(limits, resource.RLIM_INFINITY) == 0  # no cap
    capped = load_settings(None, {"http": {"max_connections": 500}}, environ={}).http
    assert connection_budget(capped, 20_000) == 500
