"""``relaydesk doctor`` behind a WebSocket-hostile proxy (docs/doctor.md, protocol §9):
it names the refused or stalled upgrade and the proxy, and says the fallback works."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relaydesk.doctor import CHECKS, DoctorOptions, run_doctor
from relaydesk.doctor.fallback import fallback_verdict, proxy_verdict
from relaydesk.netsim.blocker import open_upgrade_blocker

FAST = DoctorOptions(probes=5, probe_interval_s=0.02, probe_timeout_s=2.0, connect_timeout_s=1.5)


@pytest.fixture(scope="module")
def node(make_module_server: Callable[..., Any]) -> Iterator[Any]:
    server = make_module_server(name="doctor-fallback")
    yield server
    server.stop()


async def test_direct_path_has_no_proxy_and_a_working_fallback(node: Any) -> None:
    report = await run_doctor(node.ws_url, node.token("alice"), options=FAST)
    assert [c.name for c in report.checks] == list(CHECKS)
    assert report.check("proxy").status == "pass"
    assert report.check("websocket").status == "pass"
    fallback = report.check("fallback")
    assert fallback.status == "pass" and fallback.data["welcome_ms"] > 0
    assert report.status == "pass"


@pytest.mark.parametrize("mode", ["refuse", "stall"])
async def test_blocked_upgrade_behind_a_proxy_is_named(node: Any, mode: str) -> None:
    async with await open_upgrade_blocker(("127.0.0.1", node.port), mode) as proxy:  # type: ignore[arg-type]
        host, port = proxy.listen_address
        report = await run_doctor(f"ws://{host}:{port}/v1/ws", node.token("alice"), options=FAST)
    upgrade = report.check("websocket")
    assert upgrade.status == "warn", upgrade
    assert ("HTTP 403" if mode == "refuse" else "stalled") in upgrade.reason
    assert "fallback works" in upgrade.reason
    assert report.check("proxy").status == "warn"
    assert "relaydesk-netsim-blocker" in report.check("proxy").reason
    assert report.check("fallback").status == "pass"
    assert report.check("login").status == "skip"
    assert report.status == "warn"


def test_verdicts() -> None:
    assert proxy_verdict({}, "", {})[0] == "pass"
    assert proxy_verdict({}, "", {"HTTPS_PROXY": "http://p:3128"})[0] == "pass"
    status, reason, _ = proxy_verdict({"via": "1.1 squid"}, "", {})
    assert status == "warn" and "via: 1.1 squid" in reason
    assert fallback_verdict(None, 12.0, "", 5)[0] == "pass"
    status, reason = fallback_verdict(200, None, "", 5)
    assert status == "fail" and "buffering" in reason
    status, reason = fallback_verdict(403, None, "blocked", 5)
    assert status == "fail" and "HTTP 403" in reason
