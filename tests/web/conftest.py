"""Fixtures for the console tests: a real node (gateway, desk, console) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_kit import ConsoleNode, free_port

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def console_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNode]:
    """``tests/web/console_server.py`` on a free port with fresh demo data."""
    data = tmp_path_factory.mktemp("console")
    port = free_port()
    log = data / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "console_server.py"),
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            stdout=out,
            stderr=out,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"console node exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"console node not ready: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    yield ConsoleNode(url=url, proc=proc, log=log)
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
