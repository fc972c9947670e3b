"""Runs the README's "First real deployment" section as written (port 8420 swapped for
a free one, in the text and as the default port), from an empty directory: no --demo."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## First real deployment", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_first_real_deployment_runs_as_written(tmp_path: Path) -> None:
    port = _free_port()
    setup, serve, second = (b.replace("8420", str(port)) for b in _blocks())
    assert "--demo" not in setup + serve + second
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "relaydesk"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m relaydesk "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env["RELAYDESK_SERVER_PORT"] = str(port)  # what the links say, like the text's 8420

    def sh(script: str) -> str:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = sh(setup)
    links = re.findall(rf"http://127\.0\.0\.1:{port}/console/welcome\?token=\S+", out)
    assert len(links) == 3, out  # the administrator, the agent, the customer
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        ["bash", "-c", "exec " + serve.strip()], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                tmp_path / "server.log"
            ).read_text()
            time.sleep(0.1)
        # A lone node runs the desk's jobs (it elected itself before reporting ready).
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["desk_jobs"] is True
        # The printed links work against the running server.
        assert httpx.get(links[2]).status_code == 200
        out = sh(second)
        assert re.search(r"ticket \d+ P2 new: Messages are delayed", out), out
        assert '"scope": "customer"' in out and '"owner_id": "dana"' in out
        assert (tmp_path / "desk-data-backup.db").stat().st_size > 0
    finally:
        server.terminate()
        server.wait(15)
