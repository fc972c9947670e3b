"""Mobile liveness (docs/protocol.md §6.2), pure, under a fake clock.

The client session asks for a heartbeat interval, the server clamps it; a ping left
unanswered drops the link long before the silence timeout; a network change drops
it at once and the reconnect does not wait; the back-off starts over only after a
stable connection.
"""

from __future__ import annotations

from relaydesk.protocol.client_session import (
    PONG_WAIT_MIN_S,
    ClientSession,
    ReconnectPolicy,
    SessionConfig,
)
from relaydesk.protocol.frames import Hello, Ping, Pong, Synced, Welcome
from relaydesk.protocol.server_session import (
    HEARTBEAT_MAX_MS,
    HEARTBEAT_MIN_MS,
    negotiate_heartbeat,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, s: float) -> float:
        self.now += s
        return self.now


def welcome(heartbeat_ms: int = 10_000, timeout_ms: int = 30_000) -> Welcome:
    return Welcome(
        user="me",
        device="d",
        session="s",
        node="n",
        region="r",
        heartbeat_ms=heartbeat_ms,
        timeout_ms=timeout_ms,
        server_ts=0,
        cursor=0,
        max_body=1024,
        max_frame=4096,
        exp=2**40,
    )


def live(clock: FakeClock, **cfg: object) -> ClientSession:
    s = ClientSession(SessionConfig(user="me", device="d", **cfg), rand=lambda: 1.0)  # type: ignore[arg-type]
    s.connection_opened("tok", clock.now)
    s.receive(welcome(), clock.now)
    s.receive(Synced(pos=0), clock.now)
    s.take_outgoing()
    return s


def test_the_server_clamps_the_requested_heartbeat() -> None:
    assert negotiate_heartbeat(None, 10_000, 30.0) == (10_000, 30.0)
    assert negotiate_heartbeat(60_000, 10_000, 30.0) == (60_000, 180.0)
    assert negotiate_heartbeat(10**6, 10_000, 30.0) == (HEARTBEAT_MAX_MS, 360.0)
    assert negotiate_heartbeat(100, 10_000, 30.0) == (HEARTBEAT_MIN_MS, 30.0)


def test_hello_asks_for_the_configured_heartbeat() -> None:
    s = ClientSession(SessionConfig(user="me", device="d", heartbeat_s=45.0))
    s.connection_opened("tok", 0.0)
    [hello] = s.take_outgoing()
    assert isinstance(hello, Hello) and hello.hb == 45_000
    plain = ClientSession(SessionConfig(user="me", device="d"))
    plain.connection_opened("tok", 0.0)
    assert plain.take_outgoing()[0].hb is None  # type: ignore[attr-defined]


def test_an_unanswered_ping_drops_the_link_before_the_timeout() -> None:
    clock = FakeClock()
    s = live(clock)
    assert s.poll(clock.advance(10.0), 0)  # the heartbeat ping goes out
    [ping] = s.take_outgoing()
    assert isinstance(ping, Ping)
    # The deadline the shell sleeps to is the pong wait, not the 30 s timeout.
    assert s.next_deadline(clock.now) <= clock.now + PONG_WAIT_MIN_S + 0.001
    assert s.poll(clock.advance(PONG_WAIT_MIN_S - 0.5), 0)
    assert not s.poll(clock.advance(1.0), 0)  # dead after ~5 s, not 30 s
    assert s.statistics().missed_pongs == 1
    s.connection_lost(4050, clock.now)
    assert s.reconnect_delay(ReconnectPolicy(base_s=1.0, max_s=60.0)) == 0.0  # at once


def test_an_answered_ping_keeps_the_link() -> None:
    clock = FakeClock()
    s = live(clock)
    s.poll(clock.advance(10.0), 0)
    [ping] = s.take_outgoing()
    assert isinstance(ping, Ping)
    s.receive(Pong(ts=ping.ts, server_ts=0), clock.advance(0.3))
    assert s.rtt is not None and abs(s.rtt - 0.3) < 1e-9
    assert s.poll(clock.advance(9.0), 0)
    assert s.statistics().missed_pongs == 0


def test_a_slow_link_gets_four_round_trips() -> None:
    clock = FakeClock()
    s = live(clock)
    s.rtt = 2.0
    s.poll(clock.advance(10.0), 0)
    s.take_outgoing()
    assert s.poll(clock.advance(7.5), 0)  # 4 x 2 s RTT = 8 s of patience
    assert not s.poll(clock.advance(1.0), 0)


def test_a_network_change_drops_the_link_and_reconnects_at_once() -> None:
    clock = FakeClock()
    s = live(clock)
    for _ in range(3):  # a history of failures: the back-off would be long
        s.attempt += 1
    s.network_changed(clock.advance(1.0))
    assert s.next_deadline(clock.now) == clock.now
    assert not s.poll(clock.now, 0)
    s.connection_lost(None, clock.now)
    assert s.reconnect_delay(ReconnectPolicy(base_s=1.0, max_s=60.0)) == 0.0
    # Resuming with the cursor: the hello of the next link names it.
    s.connection_opened("tok", clock.advance(0.1))
    [hello] = s.take_outgoing()
    assert isinstance(hello, Hello) and hello.cursor == 0
    assert s.statistics().network_changes == 1


def test_a_network_change_while_down_skips_the_back_off() -> None:
    clock = FakeClock()
    s = live(clock)
    s.connection_lost(None, clock.advance(1.0))
    s.network_changed(clock.now)
    assert s.reconnect_delay(ReconnectPolicy(base_s=1.0, max_s=60.0)) == 0.0
    # Consumed: the next failure backs off again.
    s.connection_opened("tok", clock.now)
    s.connection_lost(None, clock.advance(1.0))
    assert s.reconnect_delay(ReconnectPolicy(base_s=1.0, max_s=60.0)) > 0.0


def test_back_off_resets_only_after_a_stable_connection() -> None:
    clock = FakeClock()
    policy = ReconnectPolicy(base_s=1.0, max_s=60.0)
    s = live(clock, stable_s=10.0)
    delays = []
    for _ in range(4):  # flapping: up for 2 s each time
        s.connection_lost(None, clock.advance(2.0))
        delays.append(s.reconnect_delay(policy))
        s.connection_opened("tok", clock.advance(delays[-1]))
        s.receive(welcome(), clock.now)
        s.receive(Synced(pos=0), clock.now)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    s.connection_lost(None, clock.advance(11.0))  # this one lasted
    assert s.reconnect_delay(policy) == 1.0
