"""The browser client over the HTTP-streaming fallback, in headless Chromium with the
page's WebSockets blocked by a routing rule (tests/web/js/fallback.test.mjs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).parent / "js"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if not (JS / "node_modules" / "playwright-core").is_dir():
        return "playwright-core missing (cd tests/web/js && npm ci)"
    return None


@pytest.mark.slow
def test_browser_client_over_the_stream(running_server: Any) -> None:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests must run under CI: {missing}")
        pytest.skip(missing)
    result = subprocess.run(
        ["node", "--test", "--test-reporter=spec", "fallback.test.mjs"],
        cwd=JS,
        env={
            **os.environ,
            "NODE_URL": running_server.http_url,
            "TOKEN_A": running_server.token("alice"),
            "TOKEN_B": running_server.token("bobweb"),
            "CHROMIUM": CHROMIUM,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
