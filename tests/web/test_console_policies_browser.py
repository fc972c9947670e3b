"""Runs the SLA policy scenario (tests/web/js/sla-policies.test.mjs) in headless Chromium.

Prerequisites and screenshot folder: browser_kit.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_kit import run_scenario, screenshots
from console_kit import ConsoleNode


@pytest.mark.slow
def test_policy_version_added_and_reapplied_in_a_real_browser(
    console_node: ConsoleNode, tmp_path: Path
) -> None:
    shots = screenshots(tmp_path)
    started = time.time()
    run_scenario(
        "sla-policies.test.mjs",
        {"CONSOLE_URL": console_node.url, "SCREENSHOTS": str(shots)},
        timeout=180,
        server_log=console_node.log,
    )
    # Written by this run (the folder may hold the other scenarios' committed shots).
    taken = sorted(p.name for p in shots.glob("sla-polic*.png") if p.stat().st_mtime >= started)
    assert taken == ["sla-policies.png", "sla-policy-editor.png", "sla-policy-ticket.png"], taken
