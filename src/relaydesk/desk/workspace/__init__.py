"""The agent workspace: search, views, macros, bulk, merge, mentions, attachments, CSAT."""

from relaydesk.desk.workspace.rules import mentioned_agents, sla_badge
from relaydesk.desk.workspace.service import (
    Attachment,
    BulkResult,
    Link,
    Macro,
    Mention,
    MentionHook,
    Page,
    Row,
    SavedView,
    WorkspaceService,
)

__all__ = [
    "Attachment",
    "BulkResult",
    "Link",
    "Macro",
    "Mention",
    "MentionHook",
    "Page",
    "Row",
    "SavedView",
    "WorkspaceService",
    "mentioned_agents",
    "sla_badge",
]
