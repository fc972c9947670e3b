"""E-mail notifications for customers and agents (docs/desk.md "E-mail notifications").

The desk hooks (``MailNotifications``) live in ``relaydesk.desk.mail.notifications``,
imported by the composition root; this package's names need no storage.
"""

from .model import (
    MAIL_KINDS,
    Delivery,
    DigestBox,
    MailItem,
    MailKind,
    MailPreferences,
    Recipient,
    route,
)
from .sender import MailError, SmtpConfig, SmtpSender
from .templates import render, render_digest

__all__ = [
    "MAIL_KINDS",
    "Delivery",
    "DigestBox",
    "MailError",
    "MailItem",
    "MailKind",
    "MailPreferences",
    "Recipient",
    "SmtpConfig",
    "SmtpSender",
    "render",
    "render_digest",
    "route",
]
