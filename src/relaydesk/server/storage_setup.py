"""Open the node's database and bring the messaging schema up to date."""

from __future__ import annotations

from relaydesk.clock import Clock, millis
from relaydesk.config import Settings
from relaydesk.storage import Database, Tx, open_database
from relaydesk.storage.keys import key_migrations, set_mode_tx
from relaydesk.storage.locks import LOCK_MIGRATIONS
from relaydesk.storage.messages import MessageStore, messaging_migrations
from relaydesk.storage.metadata import METADATA_MIGRATIONS
from relaydesk.storage.presence_state import PRESENCE_STATE_MIGRATIONS
from relaydesk.storage.push import PUSH_MIGRATIONS, PushConfig, put_config_tx

DEMO_APP = "demo"
DEMO_SECRET = "demo-secret-change-me-0123456789"  # printed by `make run`; never use outside a demo


def open_messaging_storage(settings: Settings, clock: Clock) -> tuple[Database, MessageStore]:
    db = open_database(
        settings.storage_url, sync=settings.storage.sync, readers=settings.storage.readers
    )
    db.migrate("messaging", messaging_migrations(db.dialect))
    db.migrate("e2ee_keys", key_migrations())  # app compliance modes are set at app creation
    db.migrate("metadata", METADATA_MIGRATIONS)
    db.migrate("locks", LOCK_MIGRATIONS)
    db.migrate("presence_state", PRESENCE_STATE_MIGRATIONS)
    db.migrate("push", PUSH_MIGRATIONS)
    r = settings.retention
    store = MessageStore(r.max_age_days * 86_400_000, r.max_per_conversation)
    now = millis(clock)
    apps = [(a.id, a.secret) for a in settings.apps]
    modes = {a.id: a.compliance for a in settings.apps}
    if settings.demo:
        apps.append((DEMO_APP, DEMO_SECRET))

    def seed(tx: Tx) -> None:
        for app, secret in apps:
            created = tx.scalar("SELECT 1 FROM apps WHERE id = ?", (app,)) is None
            store.ensure_app_tx(tx, app, secret, now)
            if created:  # the mode is chosen at creation, never changed by a restart
                set_mode_tx(tx, app, modes.get(app, "plaintext"), now)
        for a in settings.apps:  # the config file's push webhook wins at every start
            if a.push_url:
                push = PushConfig(a.id, a.push_url, a.push_secret, a.push_preview, a.push_batch_ms)
                put_config_tx(tx, push, now)

    db.write_sync(seed)
    return db, store
