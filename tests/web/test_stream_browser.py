"""The browser client over the HTTP-streaming fallback, in headless Chromium with the
page's WebSockets blocked by a routing rule (tests/web/js/fallback.test.mjs)."""

from __future__ import annotations

from typing import Any

import pytest
from browser_kit import run_scenario


@pytest.mark.slow
def test_browser_client_over_the_stream(running_server: Any) -> None:
    run_scenario(
        "fallback.test.mjs",
        {
            "NODE_URL": running_server.http_url,
            "TOKEN_A": running_server.token("alice"),
            "TOKEN_B": running_server.token("bobweb"),
        },
        timeout=120,
        server_log=running_server.log_path,
    )
