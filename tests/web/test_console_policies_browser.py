"""Runs the SLA policy scenario (tests/web/js/sla-policies.test.mjs) in headless Chromium.

The same prerequisites and screenshot rules as ``test_console_browser.py``: without node,
Chromium or playwright-core it skips (fails under ``CI=true``); screenshots go to the
test's temporary folder unless ``RELAYDESK_SCREENSHOTS=bench/screenshots``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from console_kit import ConsoleNode
from test_console_browser import CHROMIUM, JS, ROOT, _missing


@pytest.mark.slow
def test_policy_version_added_and_reapplied_in_a_real_browser(
    console_node: ConsoleNode, tmp_path: Path
) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {missing}")
        pytest.skip(missing)
    wanted = os.environ.get("RELAYDESK_SCREENSHOTS")
    shots = (ROOT / wanted) if wanted else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "sla-policies.test.mjs"],
        cwd=JS,
        env={
            **os.environ,
            "CONSOLE_URL": console_node.url,
            "SCREENSHOTS": str(shots),
            "CHROMIUM": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = result.stdout[-12000:] + result.stderr[-4000:]
    assert result.returncode == 0, (
        report + "\n--- server log ---\n" + console_node.log.read_text()[-3000:]
    )
    # Written by this run (the folder may hold the other scenarios' committed shots).
    taken = sorted(p.name for p in shots.glob("sla-polic*.png") if p.stat().st_mtime >= started)
    assert taken == ["sla-policies.png", "sla-policy-editor.png", "sla-policy-ticket.png"], taken
