"""Pure scheduling rules of the impairment proxy: no sockets, no sleeping."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import relaydesk.netsim as netsim
from relaydesk.netsim import LinkProfile, ReleaseSchedule, TokenBucket, chunk_delay
from relaydesk.netsim.schedule import bucket_burst, parse_bandwidth, should_reset, slice_sizes


def test_public_names_are_pinned() -> None:
    assert sorted(netsim.__all__) == [
        "ControlServer",
        "CutMode",
        "CutRequest",
        "Direction",
        "ImpairRequest",
        "Limits",
        "LinkProfile",
        "Netsim",
        "NetsimState",
        "NetsimStats",
        "ReleaseSchedule",
        "TokenBucket",
        "chunk_delay",
        "open_control",
        "open_netsim",
        "parse_bandwidth",
    ]


def test_latency_without_jitter_is_exact() -> None:
    sched = ReleaseSchedule()
    profile = LinkProfile(latency_ms=40)
    rng = random.Random(1)
    assert sched.release_at(10.0, profile, rng) == pytest.approx(10.04)
    assert sched.release_at(10.5, profile, rng) == pytest.approx(10.54)


def test_jitter_stays_within_latency_plus_minus_jitter() -> None:
    rng = random.Random(7)
    profile = LinkProfile(latency_ms=100, jitter_ms=30)
    delays = [chunk_delay(profile, rng) for _ in range(5000)]
    assert min(delays) >= 0.070 and max(delays) <= 0.130
    assert sum(delays) / len(delays) == pytest.approx(0.100, abs=0.002)


def test_jitter_larger_than_latency_clamps_at_zero() -> None:
    rng = random.Random(3)
    profile = LinkProfile(latency_ms=5, jitter_ms=50)
    assert min(chunk_delay(profile, rng) for _ in range(1000)) == 0.0


@given(
    st.lists(st.floats(min_value=0, max_value=0.05), min_size=1, max_size=200),
    st.floats(min_value=0, max_value=500),
    st.floats(min_value=0, max_value=500),
    st.integers(0, 2**32),
)
def test_jitter_never_reorders(gaps: list[float], latency: float, jitter: float, seed: int) -> None:
    """Release times are non-decreasing in read order, whatever the draws."""
    sched = ReleaseSchedule()
    rng = random.Random(seed)
    profile = LinkProfile(latency_ms=latency, jitter_ms=jitter)
    now, last = 0.0, float("-inf")
    for gap in gaps:
        now += gap
        release = sched.release_at(now, profile, rng)
        assert release >= last
        assert release >= now + max(0.0, latency - jitter) / 1000 - 1e-12
        last = release


def test_profile_change_mid_stream_still_keeps_order() -> None:
    sched = ReleaseSchedule()
    rng = random.Random(0)
    first = sched.release_at(0.0, LinkProfile(latency_ms=500), rng)
    second = sched.release_at(0.01, LinkProfile(latency_ms=0), rng)
    assert first == pytest.approx(0.5) and second == first


def test_token_bucket_burst_then_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100.0, now=0.0)
    assert bucket.reserve(100, 0.0) == 0.0  # the burst passes at once
    assert bucket.reserve(50, 0.0) == pytest.approx(0.05)  # 50 bytes owed at 1000 B/s
    assert bucket.reserve(50, 0.0) == pytest.approx(0.10)  # queued behind the first
    assert bucket.level(0.1) == pytest.approx(0.0)
    assert bucket.level(10.0) == 100.0  # refills only up to the burst


def test_token_bucket_long_run_rate_never_exceeds_cap() -> None:
    """A greedy sender writing as soon as allowed sends ``rate * t + burst`` bytes."""
    rate, burst = 10_000.0, 1500.0
    bucket = TokenBucket(rate, burst, now=0.0)
    now, sent = 0.0, 0
    while now < 5.0:
        now += bucket.reserve(1000, now)
        sent += 1000
    assert sent <= rate * now + burst + 1000
    assert sent >= rate * now * 0.99


def test_token_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0)
    with pytest.raises(ValueError):
        TokenBucket(1, 1, 0).reserve(-1, 0)


def test_burst_and_slices() -> None:
    assert bucket_burst(1000) == 1500.0
    assert bucket_burst(1_000_000) == 20_000.0
    assert slice_sizes(10, 4) == [4, 4, 2]
    assert slice_sizes(8, 4) == [4, 4]
    assert slice_sizes(0, 4) == []


def test_reset_probability() -> None:
    rng = random.Random(5)
    assert not any(should_reset(LinkProfile(), rng) for _ in range(1000))
    assert all(should_reset(LinkProfile(reset_probability=1), rng) for _ in range(100))
    hits = sum(should_reset(LinkProfile(reset_probability=0.1), rng) for _ in range(10_000))
    assert 800 < hits < 1200


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("9600", 9600),
        ("256kbit", 256_000),
        ("1mbit", 1_000_000),
        ("1Mbit", 1_000_000),
        ("1.5mbit", 1_500_000),
        ("1gbit", 1_000_000_000),
        ("64kB", 512_000),
        ("1MB", 8_000_000),
    ],
)
def test_parse_bandwidth(text: str, bits: int) -> None:
    assert parse_bandwidth(text) == bits


@pytest.mark.parametrize("text", ["", "fast", "1kb", "-5kbit", "1tbit", "0", "2000gbit"])
def test_parse_bandwidth_refuses_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"bandwidth"):
        parse_bandwidth(text)


def test_profile_validation() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"latency_ms": -1}, LinkProfile)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"reset_probability": 1.5}, LinkProfile)
    assert LinkProfile(bandwidth_bps=8000).bytes_per_second == 1000.0
