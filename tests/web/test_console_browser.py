"""Runs the Playwright scenarios (tests/web/js/console.test.mjs) in headless Chromium
(prerequisites and screenshot folder: browser_kit.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser_kit import run_scenario, screenshots
from console_kit import ConsoleNode


def _agent_key(node: ConsoleNode) -> str:
    found = re.search(r"desk key\s+agent:alice\s+(rdk_\S+)", node.log.read_text())
    assert found is not None, "the demo node prints its desk keys"
    return found.group(1)


@pytest.mark.slow
def test_console_in_a_real_browser(console_node: ConsoleNode, tmp_path: Path) -> None:
    shots = screenshots(tmp_path)
    run_scenario(
        "console.test.mjs",
        {
            "CONSOLE_URL": console_node.url,
            "SCREENSHOTS": str(shots),
            # The workspace scenarios set up a policy and a macro through the API.
            "DESK_AGENT_KEY": _agent_key(console_node),
        },
        timeout=300,
        server_log=console_node.log,
    )
    taken = sorted(p.name for p in shots.glob("*.png"))
    assert "queue.png" in taken and "network-quality.png" in taken, taken
