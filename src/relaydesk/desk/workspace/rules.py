"""Pure rules of the agent workspace: SLA badges, @mentions, macro text, attachment checks.

Every function takes what it needs (``now`` included) and touches no I/O, so each is a
plain unit test (tests/desk/workspace/test_rules.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final

from relaydesk.desk.tickets.model import Ticket

#: A badge the queue shows: the cached SLA state, or ``at_risk``/``breached`` read at ``now``.
BADGE_LABELS: Final = {
    "at_risk": "at risk",
    "breached": "breached",
    "active": "on track",
    "paused": "paused",
    "achieved": "achieved",
    "none": "no SLA",
}


def sla_badge(ticket: Ticket, warn_at: datetime | None, now: datetime) -> str:
    """``breached`` once a target has passed (even before the scheduler marked it),
    ``at_risk`` from the policy's warning instant (``warn_fraction`` of the budget) until
    the target, else the cached state."""
    if ticket.sla_state == "breached" or (
        ticket.status not in ("solved", "closed")
        and ticket.due_at is not None
        and ticket.due_at <= now
    ):
        return "breached"
    if ticket.sla_state == "active" and warn_at is not None and warn_at <= now:
        return "at_risk"
    return ticket.sla_state


_MENTION: Final = re.compile(r"(?<![\w@.])@([a-z0-9][a-z0-9_.-]{0,63})", re.IGNORECASE)


def mentioned_agents(body: str, agents: Iterable[str]) -> list[str]:
    """Agent ids named as ``@id`` in ``body``, in order of first mention; ``@unknown`` and
    e-mail addresses (``bob@example.com``) are not mentions.  A trailing full stop is
    punctuation (``@bob.``)."""
    known = {a.lower(): a for a in agents}
    out: dict[str, None] = {}
    for m in _MENTION.finditer(body):
        name = m.group(1).rstrip(".-").lower()
        if name in known:
            out[known[name]] = None
    return list(out)


_PLACEHOLDER: Final = re.compile(r"\{(ticket|subject|requester|agent|organisation)\}")


def render_macro(body: str, values: Mapping[str, str]) -> str:
    """Fill ``{ticket}``, ``{subject}``, ``{requester}``, ``{agent}``, ``{organisation}``;
    any other brace text stays as written."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), body)


# -- attachments ------------------------------------------------------------------------------

#: Types an attachment may have, by the extension the uploader's file name carries, and
#: the ``Content-Type`` it is served with.  Nothing that a browser would run or render as a
#: document of this origin (HTML, SVG, XML, JavaScript) is on the list.
ALLOWED_TYPES: Final = {
    "txt": "text/plain; charset=utf-8",
    "log": "text/plain; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
}
#: Served inline (shown in the page); everything else is a download.
INLINE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
#: Signatures of the binary image types: an upload named ``.png`` must be a PNG.
_MAGIC: Final = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "application/gzip": (b"\x1f\x8b",),
}
MAX_FILENAME: Final = 120


class AttachmentRefused(ValueError):
    """An upload that breaks a rule; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def clean_filename(name: str) -> str:
    """The file name as stored: last path part, control and quote characters removed,
    Unicode normalised (NFC), at most ``MAX_FILENAME`` characters keeping the extension."""
    base = re.split(r"[\\/]", name)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '"<>:|?*;')
    base = base.strip(" .")
    if len(base) > MAX_FILENAME:
        stem, dot, ext = base.rpartition(".")
        keep = MAX_FILENAME - len(ext) - 1 if dot and len(ext) <= 8 else MAX_FILENAME
        base = (stem[:keep] + "." + ext) if dot and len(ext) <= 8 else base[:MAX_FILENAME]
    return base


def check_upload(filename: str, data: bytes, max_bytes: int) -> tuple[str, str]:
    """``(clean file name, served content type)`` of an acceptable upload, else
    :class:`AttachmentRefused` (``attachment.too_large`` 413, ``attachment.empty``,
    ``attachment.bad_name``, ``attachment.type_not_allowed`` 415)."""
    if len(data) > max_bytes:
        raise AttachmentRefused(
            "attachment.too_large", f"attachment over the limit of {max_bytes} bytes", 413
        )
    if not data:
        raise AttachmentRefused("attachment.empty", "the attachment is empty", 422)
    name = clean_filename(filename)
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if not name or not ext:
        raise AttachmentRefused(
            "attachment.bad_name", "give a file name with an extension (e.g. doctor.json)", 422
        )
    content_type = ALLOWED_TYPES.get(ext)
    if content_type is None:
        allowed = ", ".join(sorted(ALLOWED_TYPES))
        raise AttachmentRefused(
            "attachment.type_not_allowed", f".{ext} files are not accepted; allowed: {allowed}", 415
        )
    magic = _MAGIC.get(content_type)
    if magic is not None and not data.startswith(magic):
        raise AttachmentRefused(
            "attachment.type_not_allowed", f"the content is not a {ext.upper()} file", 415
        )
    if content_type.startswith(("text/", "application/json")):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise AttachmentRefused(
                "attachment.type_not_allowed", f"a .{ext} file must be UTF-8 text", 415
            ) from None
    return name, content_type


def content_disposition(filename: str, content_type: str) -> str:
    """``inline`` for images, ``attachment`` for the rest, with an ASCII fallback name and
    the exact name in RFC 5987 ``filename*``."""
    from urllib.parse import quote

    kind = "inline" if content_type in INLINE_TYPES else "attachment"
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
