"""``relaydesk doctor`` against a real server: healthy, stopped, wrong token, skewed, slow."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import msgspec
import pytest
import typer
from typer.testing import CliRunner

from relaydesk.cli.doctor import doctor
from relaydesk.clock import SystemClock
from relaydesk.doctor import (
    CHECKS,
    AttachError,
    DoctorOptions,
    DoctorReport,
    SdkConfig,
    attach_report,
    run_doctor,
)
from relaydesk.netsim import LinkProfile, open_netsim

FAST = DoctorOptions(probes=10, probe_interval_s=0.02, probe_timeout_s=2.0)


class OffsetClock:
    """The system clock with the wall time shifted: a machine whose clock is wrong."""

    def __init__(self, offset_s: float) -> None:
        self._inner = SystemClock()
        self._offset = offset_s

    def time(self) -> float:
        return self._inner.time() + self._offset

    def monotonic(self) -> float:
        return self._inner.monotonic()


def _statuses(report: DoctorReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


async def test_healthy_server_passes_every_check(running_server: Any) -> None:
    seen: list[tuple[str, bool]] = []
    report = await run_doctor(
        running_server.ws_url,
        running_server.token("alice"),
        # with the directory: the ranking it gives this client and the RTT to each node
        options=msgspec.structs.replace(FAST, directory=running_server.http_url),
        on_progress=lambda name, result: seen.append((name, result is None)),
    )
    assert [c.name for c in report.checks] == list(CHECKS)
    statuses = _statuses(report)
    assert statuses.pop("tls") == "skip"  # ws:// on loopback
    assert set(statuses.values()) == {"pass"}, report.checks
    assert report.ok and report.status == "pass"
    assert report.user == "alice"
    assert report.check("rtt_loss").data["loss"] == 0.0
    assert report.check("round_trip").data["conv"] == "dm:alice:alice"
    assert seen[0] == ("dns", True) and seen[-1] == ("edges", False)
    [edge] = report.check("edges").data["edges"]
    assert edge["rank"] == 1 and edge["url"] == running_server.ws_url, edge
    assert edge["rtt_ms"] is not None and edge["rtt_ms"] > 0 and edge["why"], edge
    assert report.check("edges").reason.startswith(f"1. {edge['node']} (")
    decoded = msgspec.json.decode(msgspec.json.encode(report), type=DoctorReport)
    assert decoded == report


async def test_stopped_server_fails_connectivity_with_a_readable_reason(
    running_server: Any,
) -> None:
    token = running_server.token("alice")
    running_server.stop()
    report = await run_doctor(running_server.ws_url, token, options=FAST)
    tcp = report.check("tcp")
    assert tcp.status == "fail"
    assert "connection refused" in tcp.reason and str(running_server.port) in tcp.reason
    assert report.check("dns").status == "pass"
    for later in ("websocket", "login", "clock_skew", "rtt_loss", "round_trip"):
        assert report.check(later).status == "skip"
        assert "tcp did not pass" in report.check(later).reason or "skipped" in (
            report.check(later).reason
        )
    assert not report.ok


async def test_wrong_token_fails_login_naming_the_code(running_server: Any) -> None:
    forged = running_server.token("alice", secret="not-the-secret-" + "x" * 32)
    report = await run_doctor(running_server.ws_url, forged, options=FAST)
    login = report.check("login")
    assert login.status == "fail"
    assert login.reason.startswith("TOKEN_INVALID")
    assert login.data["code_name"] == "TOKEN_INVALID"
    assert report.check("websocket").status == "pass"
    assert report.check("round_trip").status == "skip"


async def test_expired_token_fails_login_naming_token_expired(running_server: Any) -> None:
    from relaydesk.protocol.tokens import mint_token

    expired = mint_token(
        running_server.app, running_server.secret, "alice", now=time.time() - 7200, ttl_s=60
    )
    report = await run_doctor(running_server.ws_url, expired, options=FAST)
    assert report.check("login").reason.startswith("TOKEN_EXPIRED")


@pytest.mark.parametrize(("offset_s", "status"), [(90.0, "fail"), (-45.0, "fail"), (5.0, "warn")])
async def test_skewed_clock_fails_the_skew_check(
    running_server: Any, offset_s: float, status: str
) -> None:
    report = await run_doctor(
        running_server.ws_url,
        running_server.token("alice"),
        options=FAST,
        clock=OffsetClock(offset_s),
    )
    skew = report.check("clock_skew")
    assert skew.status == status, skew
    # The server is behind a fast local clock: offset is minus the injected offset.
    assert skew.data["offset_ms"] == pytest.approx(-offset_s * 1000, abs=250)
    assert report.check("login").status == "pass"  # the token was minted with the real clock


async def test_rtt_reflects_latency_added_by_netsim(running_server: Any) -> None:
    one_way_ms = 40.0
    proxy = await open_netsim(
        ("127.0.0.1", 0),
        ("127.0.0.1", running_server.port),
        upstream_profile=LinkProfile(latency_ms=one_way_ms),
        downstream_profile=LinkProfile(latency_ms=one_way_ms),
    )
    try:
        url = f"ws://127.0.0.1:{proxy.listen_address[1]}/v1/ws"
        report = await run_doctor(url, running_server.token("alice"), options=FAST)
    finally:
        await proxy.aclose()
    rtt = report.check("rtt_loss")
    assert rtt.status == "pass", rtt
    p50 = rtt.data["rtt_p50_ms"]
    print(f"configured RTT {2 * one_way_ms:.0f} ms, doctor p50 {p50:.1f} ms")
    assert 2 * one_way_ms <= p50 <= 2 * one_way_ms + 20
    assert report.check("round_trip").data["delivered_ms"] >= 2 * one_way_ms


async def test_sdk_lint_flags_a_bad_configuration(running_server: Any) -> None:
    bad = SdkConfig(timeout_s=15.0, heartbeat_s=10.0, reconnect_max_s=0.5, outbox_limit=None)
    options = msgspec.structs.replace(FAST, sdk_config=bad)
    report = await run_doctor(running_server.ws_url, running_server.token("alice"), options=options)
    lint = report.check("sdk_config")
    assert lint.status == "warn"
    assert {f["setting"] for f in lint.data["findings"]} == {
        "timeout_s",
        "reconnect_max_s",
        "outbox_limit",
    }


async def test_bad_url_fails_before_any_lookup() -> None:
    # No real DNS lookup here: tests send traffic only to loopback or their own namespaces.
    report = await run_doctor("http://example.invalid/v1/ws", "t", options=FAST)
    assert report.check("dns").status == "fail" and "ws://" in report.check("dns").reason
    assert report.check("tcp").status == "skip"


async def test_wrong_path_fails_the_upgrade(running_server: Any) -> None:
    url = running_server.ws_url.replace("/v1/ws", "/nope")
    report = await run_doctor(url, running_server.token("alice"), options=FAST)
    assert report.check("websocket").status == "fail"
    assert "HTTP" in report.check("websocket").reason


# -- the CLI -------------------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(doctor)
    return app


def test_cli_json_and_exit_codes(running_server: Any) -> None:
    runner = CliRunner()
    args = ["--url", running_server.ws_url, "--probes", "5", "--json"]
    ok = runner.invoke(_cli(), [*args, "--token", running_server.token("bob")])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["status"] == "pass"

    minted = runner.invoke(
        _cli(),
        [*args, "--app", running_server.app, "--secret", running_server.secret, "--user", "carol"],
    )
    assert minted.exit_code == 0 and json.loads(minted.stdout)["user"] == "carol"

    bad = runner.invoke(_cli(), [*args, "--token", "garbage"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["status"] == "fail"

    table = runner.invoke(_cli(), ["--url", running_server.ws_url, "--token", "garbage"])
    assert table.exit_code == 1 and "TOKEN_INVALID" in table.stdout


class _DeskStub:
    """Records what the doctor posts; answers like the desk API."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append((self.path, dict(self.headers), body))
                if self.headers["Authorization"] != "Bearer good-key":
                    self._answer(401, {"error": {"code": "auth.invalid", "message": "bad key"}})
                else:
                    self._answer(201, {"id": 7, "ticket_id": 42, "public": True})

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def desk_stub() -> Iterator[_DeskStub]:
    stub = _DeskStub()
    stub.thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def test_cli_attach_posts_a_public_comment(running_server: Any, desk_stub: _DeskStub) -> None:
    result = CliRunner().invoke(
        _cli(),
        [
            "--url", running_server.ws_url, "--token", running_server.token("bob"),
            "--probes", "3", "--attach", "42", "--desk-url", desk_stub.url,
            "--api-key", "good-key",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path, headers, body = desk_stub.requests[0]
    assert path == "/api/desk/tickets/42/comments"
    assert headers["Authorization"] == "Bearer good-key"
    assert body["public"] is True
    fenced = body["body"].split("```json\n", 1)[1].rsplit("\n```", 1)[0]
    assert json.loads(fenced)["user"] == "bob"
    assert "| Login | PASS |" in body["body"]


def test_attach_reports_the_desk_error(
    running_server: Any, desk_stub: _DeskStub, make_report: Callable[[], DoctorReport]
) -> None:
    with pytest.raises(AttachError, match=r"HTTP 401 .*auth.invalid: bad key"):
        attach_report(desk_stub.url, "wrong", 42, make_report())
    with pytest.raises(AttachError, match="cannot reach the desk"):
        attach_report("http://127.0.0.1:1", "k", 42, make_report())


@pytest.fixture
def make_report() -> Callable[[], DoctorReport]:
    def make() -> DoctorReport:
        return DoctorReport(
            url="ws://x/v1/ws", created_at="2024-01-01T00:00:00+00:00", sdk_version="0",
            status="pass", checks=[],
        )  # fmt: skip

    return make
