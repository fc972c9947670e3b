"""Storage: the engine shared by messaging, desk and telemetry, and their stores.

Kept at the top level (not under ``server/``) because the desk and telemetry use
the same database and engine as the messaging core (BRIEF §2).  ``open_database``
returns the SQLite or the PostgreSQL engine; both satisfy :class:`Database`.
"""

from relaydesk.storage.engine import Database, Dialect, StorageError, Tx, open_database

__all__ = ["Database", "Dialect", "StorageError", "Tx", "open_database"]
