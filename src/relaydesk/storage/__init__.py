"""Storage: the engine shared by messaging, desk and telemetry, and their stores.

Kept at the top level (not under ``server/``) because the desk and telemetry use
the same database and engine as the messaging core (BRIEF §2).
"""

from relaydesk.storage.engine import Database, StorageError, Tx, open_database

__all__ = ["Database", "StorageError", "Tx", "open_database"]
