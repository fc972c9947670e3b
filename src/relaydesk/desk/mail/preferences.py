"""Each person's own e-mail preferences, read and replaced by the person (desk API, console).

Kept apart from :class:`~relaydesk.desk.mail.notifications.MailNotifications`, which exists
only with ``[mail] smtp_host`` set: a person may choose before mail is switched on, and
the notifier reads the same table (``desk_mail_preferences``) when it is.
"""

from __future__ import annotations

from relaydesk.storage.engine import Database
from relaydesk.storage.mail import MAIL_MIGRATIONS, MailPreferenceStore

from .model import MailPreferences, PersonKind


class PersonalPreferences:
    """``get``/``put`` one person's :class:`MailPreferences` (absent: the defaults)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._store = MailPreferenceStore()
        db.migrate("desk_mail", MAIL_MIGRATIONS)  # idempotent; shared with the notifier

    async def get(self, kind: PersonKind, person_id: str) -> MailPreferences:
        return await self._db.read(lambda tx: self._store.get(tx, kind, person_id))

    async def put(self, kind: PersonKind, person_id: str, prefs: MailPreferences) -> None:
        await self._db.write(lambda tx: self._store.put(tx, kind, person_id, prefs))
