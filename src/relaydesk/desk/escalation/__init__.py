"""Escalation: SLA warnings and breaches, on-call paging and auto-assignment."""

from relaydesk.desk.escalation.notifiers import (
    ChannelNotifier,
    Notice,
    Notifier,
    NotifierError,
    WebhookNotifier,
)
from relaydesk.desk.escalation.routing import choose_assignee, choose_on_call, on_call
from relaydesk.desk.escalation.scheduler import EscalationScheduler, SchedulerStats, due_notices

__all__ = [
    "ChannelNotifier",
    "EscalationScheduler",
    "Notice",
    "Notifier",
    "NotifierError",
    "SchedulerStats",
    "WebhookNotifier",
    "choose_assignee",
    "choose_on_call",
    "due_notices",
    "on_call",
]
