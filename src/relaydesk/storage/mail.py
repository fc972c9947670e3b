"""Per-person e-mail preferences (``desk/mail``): one row per person that changed them."""

from __future__ import annotations

from typing import Final

import msgspec

from relaydesk.desk.mail.model import MailPreferences, PersonKind
from relaydesk.storage.engine import Tx

#: Schema steps (the same SQL on SQLite and PostgreSQL).
MAIL_MIGRATIONS: Final = [
    "CREATE TABLE IF NOT EXISTS desk_mail_preferences ("
    " person_kind TEXT NOT NULL, person_id TEXT NOT NULL, prefs TEXT NOT NULL,"
    " PRIMARY KEY (person_kind, person_id))",
]


class MailPreferenceStore:
    """Reads and writes ``desk_mail_preferences``; absent rows mean the defaults."""

    def get(self, tx: Tx, kind: PersonKind, person_id: str) -> MailPreferences:
        rows = tx.query(
            "SELECT prefs FROM desk_mail_preferences WHERE person_kind = ? AND person_id = ?",
            (kind, person_id),
        )
        if not rows:
            return MailPreferences()
        return msgspec.json.decode(str(rows[0][0]), type=MailPreferences)

    def put(self, tx: Tx, kind: PersonKind, person_id: str, prefs: MailPreferences) -> None:
        tx.execute(
            "INSERT INTO desk_mail_preferences (person_kind, person_id, prefs) VALUES (?, ?, ?)"
            " ON CONFLICT (person_kind, person_id) DO UPDATE SET prefs = excluded.prefs",
            (kind, person_id, msgspec.json.encode(prefs).decode()),
        )
