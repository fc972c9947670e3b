"""Which node the SDK connects to next (docs/protocol.md §3.5, docs/operations.md).

Theory of operation
-------------------
The SDK holds a ranked list of node URLs: given by the application, or fetched from
the edge directory (``GET /v1/apps/{app}/edges?region=…``), best first.

- A connection attempt goes to the first candidate that is not being *avoided*.
- A failed attempt moves on to the next candidate; once every candidate failed in a
  row, the caller backs off before the next round (``failed`` says so), so a dead
  cluster is not hammered.
- A node that says it is draining (``moved`` frame, close 4061) is avoided for
  ``avoid_s`` and the client reconnects at once to the next candidate (its hints
  first): a drain moves clients without waiting for a back-off.  When every
  candidate is avoided (a lone node draining) there is nowhere to move: the client
  backs off as after a failure (``elsewhere``) instead of reconnecting in a loop.
- A connection that succeeds on a candidate other than the first is *remembered* as
  the working fallback for ``remember_s`` (like Ably's RSC15f): later reconnects try
  it first instead of the failing primary; after ``remember_s`` the primary is tried
  again.  A new ranking from the directory keeps the remembered node only if it is
  still listed.

Pure: ``now`` is a parameter; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndpointsState:
    """A snapshot for connection state and the doctor."""

    candidates: tuple[str, ...]
    current: str
    remembered: str | None
    avoided: tuple[str, ...]


class Endpoints:
    """The SDK's candidate nodes and the rules for moving between them."""

    def __init__(
        self, urls: Sequence[str], *, remember_s: float = 600.0, avoid_s: float = 60.0
    ) -> None:
        if not urls:
            raise ValueError("at least one node URL is needed")
        self.remember_s = remember_s
        self.avoid_s = avoid_s
        self._urls: list[str] = list(dict.fromkeys(urls))
        self._index = 0
        self._failures = 0  # consecutive failed attempts
        self._remembered: tuple[str, float] | None = None  # url, until
        self._avoid: dict[str, float] = {}  # url -> until

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._urls)

    def _usable(self, url: str, now: float) -> bool:
        until = self._avoid.get(url)
        return until is None or until <= now

    def current(self, now: float) -> str:
        """The URL of the next connection attempt."""
        if self._remembered is not None:
            url, until = self._remembered
            if until > now and self._usable(url, now) and self._failures == 0:
                return url
            if until <= now:
                self._remembered = None
        n = len(self._urls)
        for step in range(n):
            url = self._urls[(self._index + step) % n]
            if self._usable(url, now):
                return url
        return self._urls[self._index % n]  # every node avoided: try anyway

    def connected(self, url: str, now: float) -> None:
        """A session was established on ``url``."""
        self._failures = 0
        self._index = 0  # the next round starts from the top again
        if url != self._first_usable(now):
            self._remembered = (url, now + self.remember_s)
        elif self._remembered is not None and self._remembered[0] != url:
            self._remembered = None

    def _first_usable(self, now: float) -> str:
        return next((u for u in self._urls if self._usable(u, now)), self._urls[0])

    def failed(self, url: str, now: float) -> bool:
        """An attempt on ``url`` failed; move on.  True when a whole round failed (back off)."""
        self._failures += 1
        if self._remembered is not None and self._remembered[0] == url:
            self._remembered = None  # the fallback stopped working: the list from the top
        elif url in self._urls:
            self._index = (self._urls.index(url) + 1) % len(self._urls)
        usable = sum(1 for u in self._urls if self._usable(u, now)) or len(self._urls)
        return self._failures % usable == 0

    def drained(self, url: str, hints: Sequence[str], now: float) -> None:
        """``url`` asked its clients to move: avoid it, prefer ``hints`` (ordered)."""
        self._avoid[url] = now + self.avoid_s
        if self._remembered is not None and self._remembered[0] == url:
            self._remembered = None
        known = [h for h in hints if h != url]
        if known:
            self._urls = list(dict.fromkeys([*known, *self._urls]))
        self._index = 0
        self._failures = 0

    def elsewhere(self, now: float) -> bool:
        """Some candidate is not being avoided (a drained node's clients can move)."""
        return any(self._usable(u, now) for u in self._urls)

    def replace(self, urls: Sequence[str], now: float) -> None:
        """A fresh ranking from the directory."""
        if not urls:
            return
        self._urls = list(dict.fromkeys(urls))
        self._index = 0
        if self._remembered is not None and self._remembered[0] not in self._urls:
            self._remembered = None
        self._avoid = {u: t for u, t in self._avoid.items() if t > now}

    def state(self, now: float) -> EndpointsState:
        remembered = self._remembered[0] if self._remembered and self._remembered[1] > now else None
        return EndpointsState(
            candidates=tuple(self._urls),
            current=self.current(now),
            remembered=remembered,
            avoided=tuple(sorted(u for u, t in self._avoid.items() if t > now)),
        )
