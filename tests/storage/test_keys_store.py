"""The E2EE key directory against SQLite and PostgreSQL: public keys, atomic claims."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg import ENGINES, open_test_database, pg_schema
from relaydesk.storage import Database, open_database
from relaydesk.storage.keys import (
    DeviceConflict,
    DeviceKeys,
    KeyDirectory,
    KeysExhausted,
    SignedKey,
    TooManyKeys,
    UnknownDevice,
    claim_tx,
    key_migrations,
)

APP = "app1"
DEV = DeviceKeys("bob", "phone", "I" * 43, "S" * 43, "G" * 86)


def otks(n: int, prefix: str = "k") -> list[SignedKey]:
    return [SignedKey(f"{prefix}{i:04d}", f"K{i:042d}", "s" * 86) for i in range(n)]


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as database:
        database.migrate("e2ee_keys", key_migrations())
        yield database


async def test_upload_list_claim_and_replenishment_hint(db: Database) -> None:
    keys = KeyDirectory(db)
    pool = await keys.upload_device(APP, DEV, None, now_ms=1)
    assert (pool.count, pool.target, pool.has_fallback) == (0, 50, False)
    assert await keys.upload_device(APP, DEV, None, now_ms=2) == pool  # idempotent
    with pytest.raises(DeviceConflict):
        await keys.upload_device(
            APP, DeviceKeys("bob", "phone", "X" * 43, "S" * 43, "G" * 86), None, 3
        )
    assert (await keys.upload_one_time_keys(APP, "bob", "phone", otks(3))).count == 3
    assert (await keys.upload_one_time_keys(APP, "bob", "phone", otks(3))).count == 3  # same ids
    assert await keys.devices(APP, "bob") == [DEV]
    assert await keys.devices("other-app", "bob") == []
    first = await keys.claim(APP, "bob", "phone")
    assert (first.key.key_id, first.fallback, first.remaining) == ("k0000", False, 2)
    await keys.claim(APP, "bob", "phone")
    await keys.claim(APP, "bob", "phone")
    with pytest.raises(KeysExhausted):  # no OTK, no fallback: a documented refusal
        await keys.claim(APP, "bob", "phone")
    await keys.upload_device(APP, DEV, SignedKey("fb1", "F" * 43, "f" * 86), now_ms=4)
    fb = await keys.claim(APP, "bob", "phone")
    assert fb.fallback and fb.key.key_id == "fb1"
    assert (await keys.pool(APP, "bob", "phone")).has_fallback


async def test_bounds_unknown_devices_and_removal(db: Database) -> None:
    keys = KeyDirectory(db)
    with pytest.raises(UnknownDevice):
        await keys.upload_one_time_keys(APP, "bob", "phone", otks(1))
    with pytest.raises(UnknownDevice):
        await keys.claim(APP, "bob", "phone")
    await keys.upload_device(APP, DEV, None, now_ms=1)
    await keys.upload_one_time_keys(APP, "bob", "phone", otks(150))
    with pytest.raises(TooManyKeys):
        await keys.upload_one_time_keys(APP, "bob", "phone", otks(60, "x"))
    await keys.remove_device(APP, "bob", "phone")
    assert await keys.devices(APP, "bob") == []
    with pytest.raises(UnknownDevice):
        await keys.remove_device(APP, "bob", "phone")
    assert await db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM e2ee_one_time_keys")) == 0


async def test_backup_holds_opaque_entries_per_user(db: Database) -> None:
    keys = KeyDirectory(db)
    assert await keys.put_backup(APP, "bob", {"s1": "c1", "s2": "c2"}, 1) == 2
    assert await keys.put_backup(APP, "bob", {"s1": "c1b"}, 2) == 2
    assert await keys.get_backup(APP, "bob") == {"s1": "c1b", "s2": "c2"}
    assert await keys.get_backup(APP, "alice") == {}


def _race(open_db: list[Database], total: int) -> list[str]:
    """Two databases (two nodes) claim concurrently until the pool is dry."""
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(open_db) * 2)

    def claimer(database: Database) -> None:
        start.wait()
        while True:
            try:
                got = database.write_sync(lambda tx: claim_tx(tx, APP, "bob", "phone"))
            except KeysExhausted:
                return
            with lock:
                claimed.append(got.key.key_id)

    threads = [threading.Thread(target=claimer, args=(d,)) for d in open_db for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return claimed


@pytest.mark.parametrize("engine", ENGINES)
def test_a_claim_race_between_nodes_hands_each_key_to_one_claimer(
    engine: str, tmp_path: Path
) -> None:
    total = 120

    def run(url: str) -> None:
        nodes = [open_database(url), open_database(url)]
        try:
            nodes[0].migrate("e2ee_keys", key_migrations())
            keys = KeyDirectory(nodes[0])
            asyncio.run(keys.upload_device(APP, DEV, None, now_ms=1))
            asyncio.run(keys.upload_one_time_keys(APP, "bob", "phone", otks(total)))
            claimed = _race(nodes, total)
        finally:
            for n in nodes:
                n.close_sync()
        assert len(claimed) == total, len(claimed)
        assert len(set(claimed)) == total  # no key went to two claimers

    if engine == "sqlite":
        run(f"sqlite:///{tmp_path / 'race.db'}")
    else:
        with pg_schema() as url:
            run(url)
