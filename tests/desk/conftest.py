"""Fixtures for the desk tests: a real database (SQLite and PostgreSQL), a fake clock, a
seeded desk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from desk_testkit import MONDAY_10, WebhookReceiver, attach_apps, desk_settings, seed_people

from pg import ENGINES, open_test_database
from relaydesk.clock import FakeClock
from relaydesk.desk.component import DeskComponent, open_desk
from relaydesk.storage.engine import Database


@pytest.fixture
def desk_clock() -> FakeClock:
    return FakeClock(MONDAY_10.timestamp())


@pytest.fixture(params=ENGINES)
def desk_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def desk(desk_db: Database, desk_clock: FakeClock) -> DeskComponent:
    component = open_desk(desk_db, desk_settings(auto_assign=False), desk_clock, None)
    seed_people(component.tickets, desk_db)
    attach_apps(component)
    return component
