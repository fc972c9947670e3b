"""The SMTP shell: one message out through aiosmtplib (a maintained asyncio client)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr, make_msgid

import aiosmtplib
import msgspec


class SmtpConfig(msgspec.Struct, frozen=True):
    """Where and how to hand mail over (``[mail]`` settings)."""

    host: str
    port: int = 25
    starttls: bool = False  # upgrade with STARTTLS (port 587); ``tls`` for implicit TLS (465)
    tls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "relaydesk <desk@localhost>"
    timeout_s: float = 10.0


class MailError(Exception):
    """The SMTP server refused the message or could not be reached."""


class SmtpSender:
    """Sends one text/plain message per call; raises :class:`MailError` on failure."""

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        self.sent = 0

    def message(
        self, to_name: str, to_addr: str, subject: str, body: str, key: str
    ) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._config.sender
        msg["To"] = formataddr((to_name, to_addr))
        msg["Subject"] = subject
        msg["Message-ID"] = make_msgid(domain="relaydesk.local")
        if key:
            msg["X-Relaydesk-Key"] = key  # the same notice mailed twice is recognisable
        msg.set_content(body)
        return msg

    async def send(
        self, to_name: str, to_addr: str, subject: str, body: str, key: str = ""
    ) -> None:
        c = self._config
        msg = self.message(to_name, to_addr, subject, body, key)
        try:
            await aiosmtplib.send(
                msg,
                hostname=c.host,
                port=c.port,
                start_tls=c.starttls,
                use_tls=c.tls,
                username=c.username or None,
                password=c.password or None,
                timeout=c.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailError(f"SMTP {c.host}:{c.port}: {exc}") from exc
        self.sent += 1
