"""Pure scheduling rules of the impairment proxy: when a chunk may leave, and how fast.

Theory of operation
-------------------
Each direction of each proxied connection is a byte stream.  The proxy cuts it into
chunks as they are read; every chunk gets a *release time* when it is read:

    release = max(now + latency + uniform(-jitter, +jitter), previous release)

The ``max`` is what keeps a TCP stream a stream: jitter may never let a later chunk
overtake an earlier one, so a chunk that drew a small delay waits behind its
predecessor (head-of-line blocking, exactly what a real TCP receiver sees when one
segment is late).  Effective delays under jitter are therefore skewed upward a little.

After release, the bandwidth cap decides when the bytes may be written: a token bucket
in *bytes per second* with a small burst, shared by every connection of the same
direction (it models one link, not one flow).  ``TokenBucket.reserve`` deducts at once
and answers how long to wait, so concurrent writers queue fairly in call order and the
long-run rate never exceeds the cap.

Nothing here reads a clock, sleeps or touches a socket: ``now`` (seconds on a
monotonic clock) and a ``random.Random`` are parameters, so the rules are unit tested
without I/O (STYLE rule 3).
"""

from __future__ import annotations

import math
import random
import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Direction = Literal["upstream", "downstream"]
"""``upstream``: client -> upstream server; ``downstream``: upstream server -> client."""

DIRECTIONS: tuple[Direction, Direction] = ("upstream", "downstream")

MAX_DELAY_MS = 60_000.0
"""Latency and jitter above a minute are almost surely a unit mistake; refused."""

MIN_BANDWIDTH_BPS = 8
MAX_BANDWIDTH_BPS = 100_000_000_000
"""Caps are in bits per second: from one byte per second to 100 Gbit/s."""

DelayMs = Annotated[float, Meta(ge=0, le=MAX_DELAY_MS)]
BandwidthBps = Annotated[int, Meta(ge=MIN_BANDWIDTH_BPS, le=MAX_BANDWIDTH_BPS)]
Probability = Annotated[float, Meta(ge=0, le=1)]


class LinkProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The impairment of one direction.

    ``latency_ms`` is added to every chunk, ``jitter_ms`` spreads it uniformly over
    ``latency ± jitter`` (clamped at zero), ``bandwidth_bps`` caps the direction in
    *bits* per second (``None``: no cap) and ``reset_probability`` is the chance that
    forwarding a chunk resets the whole connection instead (TCP RST to both ends).
    """

    latency_ms: DelayMs = 0.0
    jitter_ms: DelayMs = 0.0
    bandwidth_bps: BandwidthBps | None = None
    reset_probability: Probability = 0.0

    @property
    def bytes_per_second(self) -> float | None:
        """The cap as the token bucket counts it (bytes per second)."""
        return None if self.bandwidth_bps is None else self.bandwidth_bps / 8.0


def chunk_delay(profile: LinkProfile, rng: random.Random) -> float:
    """Seconds this chunk is held back: ``latency ± jitter``, never negative."""
    delay_ms = profile.latency_ms
    if profile.jitter_ms > 0:
        delay_ms += rng.uniform(-profile.jitter_ms, profile.jitter_ms)
    return max(0.0, delay_ms) / 1000.0


class ReleaseSchedule:
    """Release times for the chunks of one stream direction, in read order.

    Release times never decrease, so writing chunks at their release times keeps
    the byte order whatever the jitter draws.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = -math.inf

    def release_at(self, now: float, profile: LinkProfile, rng: random.Random) -> float:
        """The time (same clock as ``now``) at which a chunk read at ``now`` may leave."""
        release = max(now + chunk_delay(profile, rng), self._last)
        self._last = release
        return release


class TokenBucket:
    """A byte-rate limiter: ``rate`` bytes per second, at most ``burst`` bytes at once.

    ``reserve(n, now)`` takes ``n`` tokens immediately, letting the level go negative,
    and returns the seconds the caller must wait before writing: a debt of ``d`` bytes
    takes ``d / rate`` seconds to repay.  Callers that reserve in turn therefore get
    consecutive slots and the rate holds over any window longer than ``burst / rate``.
    """

    __slots__ = ("_burst", "_level", "_rate", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("token bucket needs a positive rate and burst")
        self._rate = rate
        self._burst = burst
        self._level = burst
        self._stamp = now

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """Bytes that may pass back to back after an idle period."""
        return self._burst

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (negative: bytes still owed)."""
        return min(self._burst, self._level + (now - self._stamp) * self._rate)

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` bytes' worth of tokens; seconds to wait before sending them."""
        if n < 0:
            raise ValueError("cannot reserve a negative byte count")
        if now > self._stamp:
            self._level = self.level(now)
            self._stamp = now
        self._level -= n
        return 0.0 if self._level >= 0 else -self._level / self._rate


def bucket_burst(rate: float) -> float:
    """The burst for a cap of ``rate`` bytes/s: 20 ms worth, at least one 1500 B packet.

    Small enough that a cap is visible on transfers of a few hundred milliseconds,
    large enough that we do not wake up for every few bytes.
    """
    return max(1500.0, rate * 0.02)


def slice_sizes(n: int, limit: int) -> list[int]:
    """Split a chunk of ``n`` bytes into writes of at most ``limit`` bytes."""
    if limit <= 0:
        raise ValueError("slice limit must be positive")
    full, rest = divmod(n, limit)
    return [limit] * full + ([rest] if rest else [])


def should_reset(profile: LinkProfile, rng: random.Random) -> bool:
    """Whether forwarding the next chunk resets the connection instead."""
    return profile.reset_probability > 0 and rng.random() < profile.reset_probability


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(bit|B)?\s*$")
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_bandwidth(text: str) -> int:
    """Bits per second from ``"1mbit"``, ``"256kbit"``, ``"64kB"`` (bytes) or ``"9600"``.

    Units follow ``tc``: ``bit`` suffixes count bits, ``B`` suffixes count bytes,
    prefixes are decimal (k = 1000).  A bare number is bits per second.  Raises
    ``ValueError`` with the accepted forms on anything else.
    """
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f"invalid bandwidth {text!r}: use e.g. 9600, 256kbit, 1mbit, 1gbit (bits/s) "
            "or 64kB, 1MB (bytes/s)"
        )
    number, prefix, unit = match.groups()
    bits = float(number) * _SCALE[prefix.lower()] * (8 if unit == "B" else 1)
    if not MIN_BANDWIDTH_BPS <= bits <= MAX_BANDWIDTH_BPS:
        raise ValueError(f"bandwidth {text!r} is outside {MIN_BANDWIDTH_BPS} bit/s .. 100 Gbit/s")
    return round(bits)
