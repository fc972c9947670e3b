"""``relaydesk backup`` / ``restore`` against a real node, and upgrading a database written
by the previous release (main's code) to this one."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaydesk.storage.admin import admin_migrations

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    return subprocess.run(
        [sys.executable, "-m", "relaydesk", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_backup_while_writing_then_restore(make_server: Callable[..., Any], tmp_path: Path) -> None:
    server = make_server()
    key = _agent_key(server.log_path.read_text())
    stop = threading.Event()
    filed = [0]

    def writer() -> None:
        with httpx.Client(base_url=server.http_url, timeout=10) as c:
            while not stop.is_set():
                r = c.post(
                    "/api/desk/tickets",
                    json={"subject": "load", "requester_id": "dana"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 201, r.text
                filed[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while filed[0] < 20:
            time.sleep(0.01)
        out = tmp_path / "backups" / "one.db"
        done = _cli("backup", str(out), "--data-dir", str(server.data_dir))
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    assert '"desk"' in done.stdout and '"admin"' in done.stdout  # schema versions listed
    at_backup = _count(out, "desk_tickets")
    assert at_backup >= 20 + 6  # the demo's six and some filed during the copy
    again = _cli("backup", str(out), "--data-dir", str(server.data_dir))
    assert again.returncode == 1 and "exists" in again.stderr
    # Restore is refused while the server answers on its address.
    config = tmp_path / "node.toml"
    config.write_text(f'[server]\nport = {server.port}\ndata_dir = "{server.data_dir}"\n')
    refused = _cli("restore", str(out), "--config", str(config))
    assert refused.returncode == 1 and "restore.server_running" in refused.stderr
    late = httpx.post(  # written after the backup: the restore must drop it
        f"{server.http_url}/api/desk/tickets",
        json={"subject": "after the backup", "requester_id": "dana"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert late.status_code == 201
    server.stop()
    database = server.data_dir / "relaydesk.db"
    assert _count(database, "desk_tickets") > at_backup
    restored = _cli("restore", str(out), "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    assert (server.data_dir / "relaydesk.db.before-restore").is_file()
    # Counted in the file: under load the writer files more than one API page of tickets.
    assert _count(database, "desk_tickets") == at_backup
    server.start()
    r = httpx.get(
        f"{server.http_url}/api/desk/tickets?limit=1",
        headers={"Authorization": f"Bearer {key}"},  # demo keys survive too
    )
    assert r.status_code == 200 and len(r.json()["tickets"]) == 1
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"not a database" * 100)
    assert _cli("restore", str(bad), "--config", str(config), "--force").returncode == 1


def _agent_key(log: str) -> str:
    keys = re.findall(r"desk key\s+agent:alice\s+(\S+)", log)
    assert keys, log[-2000:]
    return keys[-1]


def test_backup_refuses_postgresql_and_a_missing_database(tmp_path: Path) -> None:
    pg = _cli(
        "backup", str(tmp_path / "x.db"), "--data-dir", str(tmp_path), "--config", "/dev/null"
    )
    assert pg.returncode == 1 and "no database" in pg.stderr
    r = _cli(
        "backup",
        str(tmp_path / "x.db"),
        env={"RELAYDESK_STORAGE_URL": "postgresql://127.0.0.1/x"},
    )
    assert r.returncode == 1 and "pg_dump" in r.stderr


#: The last release before administration existed (its database has no admin tables).
PREVIOUS_RELEASE = "5f5bb86925ad06ae4a09b6b80a76a9419fdced0f"
REPO = Path(__file__).resolve().parents[2]


def _previous_release(into: Path) -> Path:
    """The previous release's ``src`` tree, taken from this repository's history."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE, "src"],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        if os.environ.get("CI") == "true":
            raise AssertionError(archive.stderr.decode())
        pytest.skip(f"no git history with {PREVIOUS_RELEASE[:7]}: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into / "src"


@pytest.mark.slow
def test_a_database_of_the_previous_release_upgrades_in_place(tmp_path: Path) -> None:
    """The previous release (from git history) writes a demo database; this code migrates
    it forward on start: data kept, new components added, demo keys work."""
    previous = _previous_release(tmp_path / "release")
    data = tmp_path / "old"
    seed = (
        "from relaydesk.config import load_settings\n"
        "from relaydesk.server.app import RelaydeskServer\n"
        "import asyncio\n"
        f"overrides = {{'server': {{'data_dir': {str(data)!r}}}, 'demo': True}}\n"
        "s = load_settings(None, overrides, environ={})\n"
        "node = RelaydeskServer(s)\n"
        "node.desk.seed_demo()\n"
        "asyncio.run(node.db.aclose())\n"
    )
    old = subprocess.run(
        [sys.executable, "-c", seed],
        env={**os.environ, "PYTHONPATH": str(previous)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert old.returncode == 0, old.stderr
    database = data / "relaydesk.db"
    tickets = _count(database, "desk_tickets")
    # This release opens it (migrating) through the CLI, and the admin tables appear.
    r = _cli("admin", "--data-dir", str(data), "people")
    assert r.returncode == 0, r.stderr
    assert _count(database, "desk_tickets") == tickets
    conn = sqlite3.connect(database)
    versions = dict(conn.execute("SELECT component, version FROM schema_versions").fetchall())
    conn.close()
    assert versions["admin"] == len(admin_migrations()) and versions["desk"] >= 2
    out = _cli("admin", "--data-dir", str(data), "init", "--email", "ops@example.com")
    assert out.returncode == 0 and "/console/welcome?token=" in out.stdout
