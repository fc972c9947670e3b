"""Runs the portal's "Run a check" scenario (tests/web/js/portal-check.test.mjs) in headless
Chromium against a real node: the browser's check is attached to the ticket and the
automatic acknowledgement uses it.  Skips (fails under ``CI=true``) like
``test_console_browser.py`` when Node, Chromium or playwright-core is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from console_kit import ConsoleNode
from test_console_browser import CHROMIUM, JS, _missing


@pytest.mark.slow
def test_portal_check_in_a_real_browser(console_node: ConsoleNode, tmp_path: Path) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {missing}")
        pytest.skip(missing)
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "portal-check.test.mjs"],
        cwd=JS,
        env={
            **os.environ,
            "CONSOLE_URL": console_node.url,
            "CHROMIUM": CHROMIUM,
            "SCREENSHOTS": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = result.stdout[-12000:] + result.stderr[-4000:]
    assert result.returncode == 0, (
        report + "\n--- server log ---\n" + console_node.log.read_text()[-3000:]
    )
    assert (tmp_path / "portal-check.png").exists()
