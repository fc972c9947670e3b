"""The rules of one lock operation (protocol/locks.py), as plain unit tests."""

from __future__ import annotations

import pytest

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.locks import MAX_LOCKS, LockState, apply_lock


def run(lock: LockState | None, op: str, actor: str, **kw: object) -> tuple[LockState | None, str]:
    kw.setdefault("owner", False)
    return apply_lock(lock, op, "L", actor, now_ms=5, **kw)  # type: ignore[arg-type]


def refused(code: ErrorCode, lock: LockState | None, op: str, actor: str, **kw: object) -> None:
    with pytest.raises(ProtocolError) as info:
        run(lock, op, actor, **kw)
    assert info.value.code is code, info.value


def test_only_owners_set_remove_and_revoke() -> None:
    refused(ErrorCode.FORBIDDEN, None, "set", "m")
    lock, change = run(None, "set", "o", owner=True, ttl_s=30)
    assert lock == LockState("L", 30) and change == "set"
    refused(ErrorCode.FORBIDDEN, lock, "remove", "m")
    refused(ErrorCode.FORBIDDEN, lock, "revoke", "m")
    assert run(lock, "remove", "o", owner=True) == (None, "removed")
    refused(ErrorCode.INVALID_ARGUMENT, None, "set", "o", owner=True, ttl_s=0)
    refused(ErrorCode.METADATA_TOO_LARGE, None, "set", "o", owner=True, count=MAX_LOCKS)


def test_fair_queue_hands_over_in_arrival_order() -> None:
    lock: LockState | None = LockState("L", 10)
    lock, change = run(lock, "acquire", "a")
    assert lock is not None and (lock.holder, change) == ("a", "acquired")
    refused(ErrorCode.LOCK_HELD, lock, "acquire", "b")  # no waiting: an error, no change
    for who in ("b", "c"):
        lock, change = run(lock, "acquire", who, wait=True)
        assert change == "queued"
    assert lock is not None and lock.waiters == ("b", "c")
    assert run(lock, "acquire", "b", wait=True) == (lock, "queued")  # queued once
    refused(ErrorCode.LOCK_NOT_HELD, lock, "release", "z")
    lock, change = run(lock, "release", "a")
    assert lock is not None and (lock.holder, lock.waiters, lock.since) == ("b", ("c",), 5)
    lock, change = run(lock, "release", "c")  # c stops waiting
    assert lock is not None and (lock.holder, lock.waiters, change) == ("b", (), "dequeued")
    lock, change = run(lock, "expire", "")
    assert lock is not None and (lock.holder, change) == ("", "expired")
    refused(ErrorCode.LOCK_NOT_HELD, lock, "revoke", "o", owner=True)
    refused(ErrorCode.NOT_FOUND, None, "acquire", "a")
