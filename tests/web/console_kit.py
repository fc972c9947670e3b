"""Shared helpers of the console tests (uniquely named so `import` never picks another conftest)."""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class ConsoleNode:
    """A running node with the console mounted, on ``url``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PASSWORD = "demo-password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def sign_in(node: ConsoleNode, email: str) -> tuple[httpx.Client, str]:
    """A client signed in as ``email``, and its session's CSRF token."""
    client = httpx.Client(base_url=node.url, timeout=10)
    page = client.get("/console/sign-in")
    r = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": PASSWORD, "next": ""},
    )
    assert r.status_code == 303, r.text
    landing = client.get(r.headers["location"], follow_redirects=True)
    return client, csrf_of(landing.text)
