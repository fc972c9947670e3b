"""``server.tls_cert``/``tls_key``: the node serves HTTPS and WSS itself."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serves_https_with_its_own_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    config = tmp_path / "tls.toml"
    config.write_text(
        f'[server]\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaydesk", "serve", "--config", str(config)],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, (tmp_path / "log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                time.sleep(0.1)
        assert r.status_code == 200
        banner = (tmp_path / "log").read_text()
        assert f"https://127.0.0.1:{port}/console" in banner
        assert f"wss://127.0.0.1:{port}/v1/ws" in banner
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        proc.wait(15)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[server]\ntls_cert = "{cert}"\n')
    r2 = subprocess.run(
        [sys.executable, "-m", "relaydesk", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r2.returncode == 2 and "tls_key" in r2.stderr
