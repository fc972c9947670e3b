"""Headless Chromium for the browser tests: the prerequisites check and one runner for
the Playwright scenarios in tests/web/js (``node --test SCRIPT``).

Needs Debian's Chromium at /usr/bin/chromium (or ``CHROMIUM``), Node 20+ and ``npm ci``
in tests/web/js.  Under ``CI=true`` a missing piece fails the test; elsewhere it skips
with the reason.  Screenshots go to the test's temporary folder, so running the suite
never rewrites the committed ones; ``RELAYDESK_SCREENSHOTS=bench/screenshots`` refreshes
those on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

JS = Path(__file__).parent / "js"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if not (JS / "node_modules" / "playwright-core").is_dir():
        return "playwright-core missing (cd tests/web/js && npm ci)"
    return None


def require_browser() -> None:
    """Skip the test without a browser; under ``CI=true`` fail it instead."""
    reason = missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {reason}")
        pytest.skip(reason)


def screenshots(tmp_path: Path) -> Path:
    """The folder a scenario saves its screenshots in (see the module doc)."""
    wanted = os.environ.get("RELAYDESK_SCREENSHOTS")
    shots = (ROOT / wanted) if wanted else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def run_scenario(
    script: str, env: Mapping[str, str], *, timeout: float, server_log: Path | None = None
) -> None:
    """Run ``node --test script`` with ``env`` (and ``CHROMIUM``); fail with its report
    and the end of ``server_log`` when a scenario fails."""
    require_browser()
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", script],
        cwd=JS,
        env={**os.environ, "CHROMIUM": CHROMIUM, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = result.stdout[-12000:] + result.stderr[-4000:]
    if server_log is not None:
        report += "\n--- server log ---\n" + server_log.read_text()[-3000:]
    assert result.returncode == 0, report
