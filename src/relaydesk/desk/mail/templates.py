"""Mail texts: one plain-text template per kind, and the digest.

Templates are ``string.Template`` texts (``$name`` fields, nothing executed); ticket
subjects and reply bodies are inserted as they are, in a text/plain part, so nothing in
them can become markup.  Header values are cut to one line.
"""

from __future__ import annotations

from string import Template
from typing import Final

from .model import DueDigest, MailItem, MailKind

SUBJECTS: Final[dict[MailKind, Template]] = {
    "reply": Template("[#$ticket] New reply: $subject"),
    "assignment": Template("[#$ticket] Assigned to you: $subject"),
    "escalation": Template("[#$ticket] Escalation ($priority): $subject"),
    "at_risk": Template("[#$ticket] SLA at risk ($priority): $subject"),
    "mention": Template("[#$ticket] $author mentioned you: $subject"),
}
BODIES: Final[dict[MailKind, Template]] = {
    "reply": Template("$author wrote on ticket #$ticket ($subject):\n\n$text\n\n$link\n"),
    "assignment": Template(
        "Ticket #$ticket ($priority) is now assigned to you:\n$subject\n\n$text\n\n$link\n"
    ),
    "escalation": Template("Ticket #$ticket ($priority) needs you now.\n\n$text\n\n$link\n"),
    "at_risk": Template(
        "Ticket #$ticket ($priority) is close to its SLA target.\n\n$text\n\n$link\n"
    ),
    "mention": Template(
        "$author mentioned you in an internal note on ticket #$ticket ($priority):\n"
        "$subject\n\n$text\n\n$link\n"
    ),
}
FOOTER: Final = "\n--\nrelaydesk · change what you receive under Account → Notifications.\n"


def _one_line(text: str, limit: int = 150) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def ticket_link(base_url: str, ticket_id: int) -> str:
    return f"{base_url.rstrip('/')}/console/tickets/{ticket_id}"


def render(item: MailItem, base_url: str) -> tuple[str, str]:
    """(subject, body) of one mail about ``item``."""
    fields = {
        "ticket": str(item.ticket_id),
        "subject": _one_line(item.ticket_subject),
        "priority": item.priority,
        "author": item.author or "Someone",
        "text": item.text.strip(),
        "link": ticket_link(base_url, item.ticket_id),
    }
    subject = SUBJECTS[item.kind].substitute(fields)
    return _one_line(subject, 200), BODIES[item.kind].substitute(fields) + FOOTER


_DIGEST_LABEL: Final[dict[MailKind, str]] = {
    "reply": "reply",
    "assignment": "assigned",
    "escalation": "escalation",
    "at_risk": "SLA at risk",
    "mention": "mentioned you",
}


def render_digest(digest: DueDigest, base_url: str) -> tuple[str, str]:
    """(subject, body) of one digest: a line per item, oldest first."""
    n = len(digest.items)
    tickets = len({i.ticket_id for i in digest.items})
    subject = (
        f"relaydesk digest: {n} update{'s' * (n != 1)} on {tickets} ticket{'s' * (tickets != 1)}"
    )
    lines = [f"Hello {digest.recipient.name or digest.recipient.id},", ""]
    for item in digest.items:
        lines.append(
            f"- {item.at:%Y-%m-%d %H:%M} UTC  #{item.ticket_id} {_DIGEST_LABEL[item.kind]}: "
            f"{_one_line(item.ticket_subject, 80)} — {_one_line(item.text, 120)}"
        )
        lines.append(f"  {ticket_link(base_url, item.ticket_id)}")
    if digest.dropped:
        lines.append(f"(and {digest.dropped} older updates not listed)")
    return subject, "\n".join(lines) + "\n" + FOOTER
