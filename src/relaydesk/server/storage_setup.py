"""Open the node's database and bring the messaging schema up to date."""

from __future__ import annotations

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.storage import Database, open_database
from relaydesk.storage.locks import LOCK_MIGRATIONS
from relaydesk.storage.messages import MessageStore, messaging_migrations
from relaydesk.storage.metadata import METADATA_MIGRATIONS
from relaydesk.storage.presence_state import PRESENCE_STATE_MIGRATIONS

DEMO_APP = "demo"
DEMO_SECRET = "demo-secret-change-me-0123456789"  # printed by `make run`; never use outside a demo


def open_messaging_storage(settings: Settings, clock: Clock) -> tuple[Database, MessageStore]:
    db = open_database(
        settings.storage_url, sync=settings.storage.sync, readers=settings.storage.readers
    )
    db.migrate("messaging", messaging_migrations(db.dialect))
    db.migrate("metadata", METADATA_MIGRATIONS)
    db.migrate("locks", LOCK_MIGRATIONS)
    db.migrate("presence_state", PRESENCE_STATE_MIGRATIONS)
    r = settings.retention
    store = MessageStore(r.max_age_days * 86_400_000, r.max_per_conversation)
    now = millis(clock)
    apps = [(a.id, a.secret) for a in settings.apps]
    if settings.demo:
        apps.append((DEMO_APP, DEMO_SECRET))

    def seed(tx: object) -> None:
        for app, secret in apps:
            store.ensure_app_tx(tx, app, secret, now)  # type: ignore[arg-type]

    db.write_sync(seed)
    return db, store
