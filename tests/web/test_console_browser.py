"""Runs the Playwright scenarios (tests/web/js/console.test.mjs) in headless Chromium.

Needs Debian's Chromium at /usr/bin/chromium, Node 20+ and ``npm ci`` in tests/web/js.
Under ``CI=true`` a missing piece fails the test; elsewhere it skips with the reason.
Screenshots go to the test's temporary folder, so running the suite never rewrites the
committed ones; ``RELAYDESK_SCREENSHOTS=bench/screenshots`` refreshes those on purpose.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from console_kit import ConsoleNode

JS = Path(__file__).parent / "js"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if not (JS / "node_modules" / "playwright-core").is_dir():
        return "playwright-core missing (cd tests/web/js && npm ci)"
    return None


def _agent_key(node: ConsoleNode) -> str:
    found = re.search(r"desk key\s+agent:alice\s+(rdk_\S+)", node.log.read_text())
    assert found is not None, "the demo node prints its desk keys"
    return found.group(1)


@pytest.mark.slow
def test_console_in_a_real_browser(console_node: ConsoleNode, tmp_path: Path) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {missing}")
        pytest.skip(missing)
    wanted = os.environ.get("RELAYDESK_SCREENSHOTS")
    shots = (ROOT / wanted) if wanted else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "console.test.mjs"],
        cwd=JS,
        env={
            **os.environ,
            "CONSOLE_URL": console_node.url,
            "SCREENSHOTS": str(shots),
            "CHROMIUM": CHROMIUM,
            # The workspace scenarios set up a policy and a macro through the API.
            "DESK_AGENT_KEY": _agent_key(console_node),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = result.stdout[-12000:] + result.stderr[-4000:]
    assert result.returncode == 0, (
        report + "\n--- server log ---\n" + console_node.log.read_text()[-3000:]
    )
    taken = sorted(p.name for p in shots.glob("*.png"))
    assert "queue.png" in taken and "network-quality.png" in taken, taken
