"""The SDK's choice of node: ranked list, fallback memory, drain moves (pure, fake time)."""

from __future__ import annotations

import pytest

from relaydesk.client.endpoints import Endpoints

A, B, C = "ws://a/v1/ws", "ws://b/v1/ws", "ws://c/v1/ws"


def test_first_candidate_first_and_back_off_only_after_a_whole_round() -> None:
    e = Endpoints([A, B, C])
    assert e.current(0) == A
    assert e.failed(A, 0) is False and e.current(0) == B
    assert e.failed(B, 0) is False and e.current(0) == C
    assert e.failed(C, 0) is True  # every node failed in a row: back off now
    assert e.current(0) == A


def test_a_working_fallback_is_remembered_for_a_while_then_the_primary_again() -> None:
    e = Endpoints([A, B], remember_s=600)
    e.failed(A, 0)
    e.connected(B, 1)
    assert e.state(1).remembered == B
    assert e.current(100) == B  # a reconnect goes to the node that worked
    assert e.current(601) == A  # after the memory expires, the primary again
    e.connected(A, 602)
    assert e.state(602).remembered is None


def test_a_drain_moves_at_once_to_the_hinted_node_and_avoids_the_drained_one() -> None:
    e = Endpoints([A, B, C], avoid_s=60)
    e.connected(A, 0)
    e.drained(A, [C], 10)
    assert e.current(10) == C
    assert e.state(10).avoided == (A,)
    e.failed(C, 11)
    assert e.current(11) == B  # A is still avoided
    assert e.current(71) in (A, B)
    e2 = Endpoints([A])
    e2.drained(A, [], 0)
    assert e2.current(0) == A  # nowhere else to go: try it anyway


def test_a_new_ranking_replaces_the_list_and_drops_a_stale_fallback() -> None:
    e = Endpoints([A, B])
    e.failed(A, 0)
    e.connected(B, 0)
    e.replace([C, A], 5)
    assert e.current(5) == C and e.state(5).remembered is None
    e.replace([], 6)  # an empty answer keeps what we have
    assert e.urls == (C, A)


def test_duplicates_are_folded_and_an_empty_list_refused() -> None:
    assert Endpoints([A, A, B]).urls == (A, B)
    with pytest.raises(ValueError):
        Endpoints([])


def test_nowhere_else_to_go_when_every_candidate_drained() -> None:
    e = Endpoints([A, B], avoid_s=60)
    e.drained(A, [], 0)
    assert e.elsewhere(0)  # B is still there
    e.drained(B, [], 1)
    assert not e.elsewhere(1)  # both avoided: the client backs off
    assert e.elsewhere(61)  # A's avoidance is over
