"""Agora-style features on top of the messaging core (docs/protocol.md §5.11-§5.13):
channel and user metadata, channel locks, presence state.  Each service validates and
authorises, then commits through the hub or reads through the database; the rules
are pure functions in ``relaydesk.protocol``."""

from relaydesk.server.features.locks import LockService
from relaydesk.server.features.metadata import MetadataService
from relaydesk.server.features.presence_state import PresenceStateService

__all__ = ["LockService", "MetadataService", "PresenceStateService"]
