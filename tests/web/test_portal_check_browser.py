"""Runs the portal's "Run a check" scenario (tests/web/js/portal-check.test.mjs) in headless
Chromium against a real node: the browser's check is attached to the ticket and the
automatic acknowledgement uses it.  Prerequisites: browser_kit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_kit import run_scenario
from console_kit import ConsoleNode


@pytest.mark.slow
def test_portal_check_in_a_real_browser(console_node: ConsoleNode, tmp_path: Path) -> None:
    run_scenario(
        "portal-check.test.mjs",
        {"CONSOLE_URL": console_node.url, "SCREENSHOTS": str(tmp_path)},
        timeout=180,
        server_log=console_node.log,
    )
    assert (tmp_path / "portal-check.png").exists()
