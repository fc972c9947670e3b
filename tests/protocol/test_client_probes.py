"""Network-quality probes in the pure client session: rounds, RTT, loss, jitter."""

from __future__ import annotations

from relaydesk.protocol.client_session import ClientSession, SessionConfig
from relaydesk.protocol.frames import Hello, Ping, Pong, Probe, Synced, Welcome

CFG = SessionConfig(
    device="d1",
    user="me",
    region="eu-west",
    net="wifi",
    probe_interval_s=30.0,
    probe_count=4,
    probe_spacing_s=0.5,
    probe_timeout_s=2.0,
    heartbeat_s=1000.0,
    timeout_s=3000.0,
)


def logged_in(cfg: SessionConfig = CFG) -> ClientSession:
    s = ClientSession(cfg)
    s.connection_opened("tok", 0.0)
    s.receive(
        Welcome(
            user="me",
            device="d1",
            session="s",
            node="n",
            region="r",
            heartbeat_ms=1_000_000,
            timeout_ms=3_000_000,
            server_ts=0,
            cursor=0,
            max_body=1000,
            max_frame=10000,
            exp=10**10,
        ),
        0.0,
    )
    s.receive(Synced(pos=0), 0.0)
    s.take_outgoing()
    return s


def run(s: ClientSession, until: float, answer: dict[int, float]) -> list[object]:
    """Poll every 10 ms; answer ping number k after answer[k] seconds (absent: lost)."""
    out: list[object] = []
    pending: list[tuple[float, int]] = []
    k = 0
    t = 0.0
    while t <= until:
        for due, ts in list(pending):
            if due <= t:
                s.receive(Pong(ts=ts, server_ts=int(t * 1000)), t)
                pending.remove((due, ts))
        s.poll(t, int(t * 1000))
        for frame in s.take_outgoing():
            if isinstance(frame, Ping):
                if k in answer:
                    pending.append((t + answer[k], frame.ts))
                k += 1
            out.append(frame)
        t = round(t + 0.01, 2)
    return out


def test_probe_round_reports_rtt_loss_and_jitter() -> None:
    s = logged_in()
    frames = run(s, 6.0, {0: 0.05, 1: 0.07, 2: 0.05})  # the 4th ping is lost
    pings = [f for f in frames if isinstance(f, Ping)]
    probes = [f for f in frames if isinstance(f, Probe)]
    assert len(pings) == 4 and len(probes) == 1
    p = probes[0]
    assert p.samples == 4 and p.loss == 0.25
    assert 45 <= p.rtt_p50_ms <= 75 and 65 <= p.rtt_p95_ms <= 75
    assert 15 <= p.jitter_ms <= 25  # |70-50| and |50-70| averaged
    assert (p.region, p.net) == ("eu-west", "wifi")


def test_probes_repeat_per_interval_and_are_off_by_default() -> None:
    s = logged_in()
    # Rounds start at 0.5 s, then 30 s after each report; a round takes 4 pings
    # 0.5 s apart and reports once all answers are in: reports at ~2.0, ~33.5, ~65.0 s.
    frames = run(s, 66.0, {i: 0.01 for i in range(100)})
    assert sum(isinstance(f, Probe) for f in frames) == 3
    quiet = logged_in(SessionConfig(device="d1", user="me", heartbeat_s=1000.0, timeout_s=3000.0))
    assert not any(isinstance(f, Probe | Ping) for f in run(quiet, 10.0, {}))


def test_hello_is_unchanged_by_probing() -> None:
    s = ClientSession(CFG)
    s.connection_opened("tok", 0.0)
    (hello,) = s.take_outgoing()
    assert isinstance(hello, Hello) and hello.region == "eu-west"


def test_a_pong_later_than_the_timeout_counts_as_lost_even_early_in_a_round() -> None:
    # The first ping's pong takes 2.5 s (over the 2 s timeout) while the round is
    # still sending: it must not become a 2.5 s RTT sample.
    s = logged_in()
    frames = run(s, 6.0, {0: 2.5, 1: 0.05, 2: 0.05, 3: 0.05})
    (p,) = [f for f in frames if isinstance(f, Probe)]
    assert p.samples == 4 and p.loss == 0.25
    assert p.rtt_p95_ms < 100
