"""The SDK's own connection log: what this device saw of its connections, recently.

Theory of operation
-------------------
The server records the connections that reached it; it never sees a connect attempt
that failed on the way (refused, timed out, TLS), nor why the *client* gave up on a
link (its own heartbeat time-out, 4050).  The SDK keeps a bounded ring of what it saw
so that a ticket can carry the device's side of the story (docs/doctor.md §connection
log; the desk reads it in ``desk/diagnosis/client_evidence.py``):

* ``connect``: a link opened (``node``);
* ``connect_failed``: an attempt that never opened (``detail``: the error);
* ``close``: a link ended (``code``: the peer's close code, ``4050`` when this client
  timed the server out, ``None`` when the link just died; ``value_ms``: how long it
  lived);
* ``reconnect_wait``: the back-off before the next attempt (``value_ms``);
* ``rtt``: a heartbeat round trip (``value_ms``), at most one per ``rtt_every_s``;
* ``error``: an error frame from the server (``code``, ``detail``).

Pure: the caller passes the wall clock (``t_ms``) and the monotonic clock; nothing here
reads a clock or does I/O.  The ring holds ``limit`` entries (256 by default: about an
hour of a device in a reconnect loop every 15 s, or several hours of RTT samples at one
per 30 s) and counts what it dropped.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal

import msgspec

LogKind = Literal["connect", "connect_failed", "close", "reconnect_wait", "rtt", "error"]

#: Default ring size (see the module docstring for why).
DEFAULT_LIMIT: Final = 256
#: One RTT sample per this many seconds at most: heartbeats come every 10 s or so,
#: and a ring full of RTTs would push the connects and closes out.
RTT_EVERY_S: Final = 30.0


class LogEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One line of the connection log (wall-clock ``t_ms``, device clock)."""

    t_ms: int
    kind: LogKind
    node: str = ""
    code: int | None = None
    value_ms: float | None = None
    detail: str = ""


class ConnectionLog:
    """A bounded ring of ``LogEntry``; ``entries()`` is a snapshot, oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT, *, rtt_every_s: float = RTT_EVERY_S) -> None:
        if limit < 1:
            raise ValueError(f"connection log limit must be at least 1, got {limit}")
        self._ring: deque[LogEntry] = deque(maxlen=limit)
        self._rtt_every_s = rtt_every_s
        self._last_rtt_mono: float | None = None
        self._opened_mono: float | None = None
        self.dropped = 0

    def _add(self, entry: LogEntry) -> None:
        if len(self._ring) == self._ring.maxlen:
            self.dropped += 1
        self._ring.append(entry)

    def connected(self, t_ms: int, mono: float, node: str) -> None:
        self._opened_mono = mono
        self._add(LogEntry(t_ms, "connect", node=node))

    def connect_failed(self, t_ms: int, node: str, error: str) -> None:
        self._add(LogEntry(t_ms, "connect_failed", node=node, detail=error[:160]))

    def closed(self, t_ms: int, mono: float, node: str, code: int | None, reason: str) -> None:
        lived = None if self._opened_mono is None else round((mono - self._opened_mono) * 1000)
        self._opened_mono = None
        self._add(LogEntry(t_ms, "close", node=node, code=code, value_ms=lived, detail=reason[:80]))

    def waiting(self, t_ms: int, delay_s: float) -> None:
        self._add(LogEntry(t_ms, "reconnect_wait", value_ms=round(delay_s * 1000, 1)))

    def rtt(self, t_ms: int, mono: float, node: str, rtt_s: float) -> None:
        last = self._last_rtt_mono
        if last is not None and mono - last < self._rtt_every_s:
            return
        self._last_rtt_mono = mono
        self._add(LogEntry(t_ms, "rtt", node=node, value_ms=round(rtt_s * 1000, 2)))

    def error(self, t_ms: int, node: str, code: int, message: str) -> None:
        self._add(LogEntry(t_ms, "error", node=node, code=code, detail=message[:160]))

    def entries(self) -> list[LogEntry]:
        """The log, oldest first (a copy)."""
        return list(self._ring)
