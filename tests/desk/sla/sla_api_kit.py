"""A desk API client over Litestar's TestClient for the SLA API tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from desk_testkit import issue_keys
from litestar import Litestar
from litestar.testing import TestClient

from relaydesk.desk.component import DeskComponent
from relaydesk.storage.engine import Database

Client = TestClient[Litestar]


@contextmanager
def open_client(desk: DeskComponent, db: Database) -> Iterator[tuple[Client, dict[str, Any]]]:
    """A client and per-person headers (``alice``, ``bob`` agents; ``dana``, ``frank``)."""
    keys = issue_keys(desk, db)
    with TestClient(Litestar(route_handlers=[desk.router])) as client:
        yield client, {who: {"Authorization": f"Bearer {key}"} for who, key in keys.items()}


def error_code(resp: Any, status: int) -> str:
    """The stable error code of a refused request (asserting its status)."""
    assert resp.status_code == status, resp.text
    code = resp.json()["error"]["code"]
    assert isinstance(code, str)
    return code
