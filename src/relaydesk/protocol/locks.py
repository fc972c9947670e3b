"""Channel locks: the rules of one lock operation, sans I/O (docs/protocol.md §5.12).

Theory of operation
-------------------
A lock is named within a channel and has a TTL.  It is free or held by one user,
and has a FIFO queue of users waiting for it.  ``apply_lock`` takes the lock as
stored, an operation and who asks, and returns the new state plus the name of the
change, or raises ``ProtocolError``.  The store runs it inside the group commit
(the database serialises every node's commits), so two acquirers on two nodes
never both win, and each change becomes a ``lock`` event in the channel's feed.

Hand-over is fair: whenever the holder lets go (``release``, ``revoke`` by an
owner, ``expire`` after the TTL), the first waiter becomes the holder in the same
commit; nobody can jump the queue between the release and the hand-over.

TTL: a held lock whose holder has no connected device anywhere gets a deadline
``ttl_s`` seconds later (the lock sweeper of ``server/features/locks.py`` sets and
clears it from cluster presence); at the deadline it ``expire``s.  A holder that
reconnects in time keeps the lock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError

# Locks per channel and waiters per lock: bounded so a list reply and a lock row stay
# small (64 locks x 1,000 waiters x 64-character names is about 4 MiB at the very worst;
# typical use is a few locks and a few waiters).
MAX_LOCKS = 64
MAX_WAITERS = 1000
# TTL bounds, seconds (Agora: 10 s minimum, 300 s maximum; the default here is 10 s).
MIN_TTL_S = 1
MAX_TTL_S = 3600
DEFAULT_TTL_S = 10

OPS = ("set", "remove", "acquire", "release", "revoke", "expire")


@dataclass(frozen=True, slots=True)
class LockState:
    name: str
    ttl_s: int
    holder: str = ""  # "" = free
    since: int = 0  # when the holder got it, Unix ms
    waiters: tuple[str, ...] = ()


class LockChange(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a ``lock`` event (JSON): the lock after one change.

    ``op``: set, removed, acquired, queued, dequeued, released, revoked, expired;
    ``by`` who did it (empty for the server's TTL expiry or a backend)."""

    op: str
    name: str
    ttl_s: int
    holder: str = ""
    waiters: list[str] = []
    by: str = ""


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(LockChange)


def encode_lock_change(change: LockChange) -> bytes:
    return _ENCODER.encode(change)


def decode_lock_change(data: bytes) -> LockChange:
    return _DECODER.decode(data)


def _hand_over(lock: LockState, now_ms: int) -> LockState:
    """The holder lets go: the first waiter (if any) holds it now."""
    if lock.waiters:
        return replace(lock, holder=lock.waiters[0], since=now_ms, waiters=lock.waiters[1:])
    return replace(lock, holder="", since=0)


def apply_lock(
    lock: LockState | None,
    op: str,
    name: str,
    actor: str,
    *,
    owner: bool,
    now_ms: int,
    ttl_s: int = DEFAULT_TTL_S,
    wait: bool = False,
    count: int = 0,
) -> tuple[LockState | None, str]:
    """The lock after ``op`` by ``actor`` and the change's name (for the event).

    ``owner``: the actor owns the channel (or is a backend); ``count``: locks the
    channel has now (for ``set``).  Raises ``ProtocolError``; nothing changes then."""
    if op not in OPS:
        raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"unknown lock op {op!r}")
    if op in ("set", "remove", "revoke") and not owner:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"only a channel's owners may {op} a lock")
    if op == "set":
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise ProtocolError(
                ErrorCode.INVALID_ARGUMENT, f"ttl_s must be {MIN_TTL_S}..{MAX_TTL_S}"
            )
        if lock is None:
            if count >= MAX_LOCKS:
                raise ProtocolError(
                    ErrorCode.METADATA_TOO_LARGE, f"a channel has at most {MAX_LOCKS} locks"
                )
            return LockState(name, ttl_s), "set"
        return replace(lock, ttl_s=ttl_s), "set"
    if lock is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no lock {name!r}")
    if op == "remove":
        return None, "removed"
    if op == "acquire":
        if lock.holder == actor:
            return lock, "acquired"  # held already: answered (and announced) again
        if not lock.holder:
            waiters = tuple(w for w in lock.waiters if w != actor)
            return replace(lock, holder=actor, since=now_ms, waiters=waiters), "acquired"
        if not wait:
            raise ProtocolError(ErrorCode.LOCK_HELD, f"lock {name!r} is held by {lock.holder!r}")
        if actor in lock.waiters:
            return lock, "queued"
        if len(lock.waiters) >= MAX_WAITERS:
            raise ProtocolError(
                ErrorCode.METADATA_TOO_LARGE, f"lock {name!r} has {MAX_WAITERS} waiters"
            )
        return replace(lock, waiters=(*lock.waiters, actor)), "queued"
    if op == "release":
        if lock.holder == actor:
            return _hand_over(lock, now_ms), "released"
        if actor in lock.waiters:  # stop waiting
            return replace(lock, waiters=tuple(w for w in lock.waiters if w != actor)), "dequeued"
        raise ProtocolError(ErrorCode.LOCK_NOT_HELD, f"you do not hold lock {name!r}")
    # revoke (an owner) and expire (the TTL sweeper): take it from whoever holds it.
    if not lock.holder:
        raise ProtocolError(ErrorCode.LOCK_NOT_HELD, f"lock {name!r} is not held")
    return _hand_over(lock, now_ms), "revoked" if op == "revoke" else "expired"
