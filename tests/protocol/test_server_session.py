"""The server session table, deadlines and rate limiting, without sockets or clocks."""

from __future__ import annotations

import dataclasses

import pytest

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import Ack, Hello, Join, Ping, Publish
from relaydesk.protocol.server_session import (
    ALLOWED,
    Phase,
    ServerSession,
    SessionLimits,
    TokenBucket,
)

LIMITS = SessionLimits(
    auth_timeout_s=10,
    heartbeat_timeout_s=30,
    publish_rate=10,
    publish_burst=5,
    flood_rejections=4,
    max_body=100,
)


def pub(n: int = 0, size: int = 1) -> Publish:
    return Publish(id=f"m{n}", to="user:b", body=b"x" * size)


def test_table_covers_every_phase() -> None:
    assert set(ALLOWED) == set(Phase)
    assert ALLOWED[Phase.AWAIT_HELLO] == {Hello}
    assert Hello not in ALLOWED[Phase.ACTIVE]


def test_first_frame_must_be_hello() -> None:
    s = ServerSession(LIMITS, now=0)
    err = s.admit(Ping(ts=1), now=0)
    assert err is not None and err.code is ErrorCode.NOT_AUTHENTICATED and err.code.closes
    assert s.admit(Hello(token="t", device="d"), now=0) is None


def test_second_hello_is_an_error_but_not_a_close() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    err = s.admit(Hello(token="t", device="d"), now=1)
    assert err is not None and err.code is ErrorCode.ALREADY_AUTHENTICATED
    assert not err.code.closes


def test_auth_timeout() -> None:
    s = ServerSession(LIMITS, now=0)
    assert s.expired(10.0, 0) is None
    err = s.expired(10.01, 0)
    assert err is not None and err.code is ErrorCode.AUTH_TIMEOUT


def test_heartbeat_timeout_counts_from_last_frame() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=10_000)
    s.admit(Ack(pos=0), now=25)
    assert s.expired(55, 0) is None
    err = s.expired(55.1, 0)
    assert err is not None and err.code is ErrorCode.HEARTBEAT_TIMEOUT


def test_token_expiry_and_refresh() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    s.admit(Ping(ts=1), now=1)
    err = s.expired(2, 100.5)
    assert err is not None and err.code is ErrorCode.TOKEN_EXPIRED
    s.refreshed(exp=200)
    assert s.expired(2, 150) is None


def test_message_too_large_is_not_a_close() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    err = s.admit(pub(size=101), now=0)
    assert err is not None and err.code is ErrorCode.MESSAGE_TOO_LARGE and not err.code.closes
    assert s.admit(pub(size=100), now=0) is None


def test_rate_limit_then_flooding() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    assert all(s.admit(pub(i), now=0) is None for i in range(5))  # the burst
    codes = [s.admit(pub(i), now=0) for i in range(4)]
    assert [c.code for c in codes if c] == [ErrorCode.RATE_LIMITED] * 3 + [ErrorCode.FLOODING]
    assert codes[-1] is not None and codes[-1].code.closes


def test_flooding_fires_although_some_publishes_get_through() -> None:
    """The audit's case: a client sending far faster than the rate gets a publish
    accepted now and then (the bucket refills), which reset the old "in a row" count,
    so FLOODING never fired.  Rejections are counted per second instead."""
    s = ServerSession(dataclasses.replace(LIMITS, flood_rejections=40), now=0)
    s.logged_in(exp=100)
    seen: list[ErrorCode] = []
    t = 0.0
    while t < 2.0 and ErrorCode.FLOODING not in seen:
        err = s.admit(pub(), now=t)
        seen.append(err.code if err else ErrorCode.INTERNAL)  # INTERNAL marks "accepted"
        t += 0.01  # 100 publishes/s against a rate of 10/s
    assert ErrorCode.INTERNAL in seen[5:]  # some did get through meanwhile ...
    assert seen[-1] is ErrorCode.FLOODING  # ... and the client is still cut off
    assert t < 1.0


def test_a_client_that_backs_off_is_never_flooding() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    t = 0.0
    for _ in range(20):  # bursts of 8 (3 refused), then a pause of a second
        codes = [s.admit(pub(), now=t) for _ in range(8)]
        assert all(c is None or c.code is ErrorCode.RATE_LIMITED for c in codes)
        t += 1.0


def test_non_publish_frames_are_not_rate_limited() -> None:
    s = ServerSession(LIMITS, now=0)
    s.logged_in(exp=100)
    assert all(s.admit(Join(rid=i, channel="c"), now=0) is None for i in range(50))


@pytest.mark.parametrize(("elapsed", "expect"), [(0.0, 2), (0.05, 2), (0.1, 3), (10.0, 5)])
def test_token_bucket(elapsed: float, expect: int) -> None:
    b = TokenBucket(rate=10, burst=5, now=0)
    for _ in range(3):
        assert b.take(0)
    assert sum(b.take(elapsed) for _ in range(10)) == expect
