"""The edge ranking is a pure function of the registry snapshot, quality and ``now``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaydesk.edges import NodeView, RankingPolicy, rank_edges

NOW = 1_800_000_000.0
POLICY = RankingPolicy()


def node(node_id: str, region: str, **kw: object) -> NodeView:
    fields: dict[str, object] = {
        "url": f"ws://{node_id}.example/v1/ws",
        "draining": False,
        "heartbeat_at": NOW - 1,
    }
    fields.update(kw)
    return NodeView(node_id, region, **fields)  # type: ignore[arg-type]


def order(nodes: list[NodeView], region: str) -> list[str]:
    return [e.node_id for e in rank_edges(nodes, region, NOW, POLICY).edges]


def test_nearest_region_first_for_each_client_region() -> None:
    nodes = [node("lon-1", "eu-west"), node("sgp-1", "ap-southeast"), node("nyc-1", "us-east")]
    assert order(nodes, "eu-west") == ["lon-1", "nyc-1", "sgp-1"]
    assert order(nodes, "ap-southeast")[0] == "sgp-1"
    assert order(nodes, "us-east")[0] == "nyc-1"
    # A region known only by its city name works too.
    assert order(nodes, "tokyo")[0] == "sgp-1"


def test_drained_and_silent_nodes_are_left_out_with_the_reason() -> None:
    nodes = [
        node("a", "eu-west", draining=True),
        node("b", "eu-west", heartbeat_at=NOW - 60),
        node("c", "us-east"),
    ]
    ranking = rank_edges(nodes, "eu-west", NOW, POLICY)
    assert [e.node_id for e in ranking.edges] == ["c"]
    assert dict(ranking.excluded) == {"a": "draining", "b": "no heartbeat for 60 s"}


def test_a_jittering_sibling_ranks_after_its_healthy_sibling() -> None:
    nodes = [
        node("edge-a", "eu-west", rtt_p95_ms=20, send_success=0.999),
        node("edge-b", "eu-west", rtt_p95_ms=240, send_success=0.93),
    ]
    ranking = rank_edges(nodes, "eu-west", NOW, POLICY)
    assert [e.node_id for e in ranking.edges] == ["edge-a", "edge-b"]
    b = ranking.edges[1]
    assert not b.healthy
    assert any("220 ms over the best node of eu-west" in r for r in b.reasons)
    assert any("send success 93.0%" in r for r in b.reasons)


def test_a_degraded_near_node_ranks_after_a_healthy_far_one() -> None:
    nodes = [node("near", "eu-west", send_success=0.5), node("far", "us-east")]
    assert order(nodes, "eu-west") == ["far", "near"]


def test_load_reorders_only_nodes_at_about_the_same_distance() -> None:
    nodes = [
        node("busy", "eu-west", connections=900, capacity=1000),
        node("idle", "eu-west", connections=10, capacity=1000),
        node("far", "us-east", connections=0, capacity=1000),
    ]
    assert order(nodes, "eu-west") == ["idle", "busy", "far"]
    full = [node("full", "eu-west", connections=1000, capacity=1000), node("far", "us-east")]
    assert order(full, "eu-west") == ["far", "full"]


def test_unknown_regions_cost_the_documented_assumption() -> None:
    nodes = [node("x", "moon-base"), node("y", "eu-west")]
    ranking = rank_edges(nodes, "eu-west", NOW, POLICY)
    assert ranking.edges[0].node_id == "y"
    assert ranking.edges[1].cost_ms == POLICY.unknown_distance_ms
    assert "no known city" in ranking.edges[1].reasons[0]


regions = st.sampled_from(["eu-west", "us-east", "ap-southeast", "mars", "eu-central"])
views = st.builds(
    NodeView,
    node_id=st.text("abcdef", min_size=1, max_size=4),
    region=regions,
    url=st.just("ws://x/v1/ws"),
    draining=st.booleans(),
    heartbeat_at=st.floats(NOW - 100, NOW),
    connections=st.integers(0, 2000),
    capacity=st.integers(0, 1000),
    cpu=st.floats(0, 2),
    send_success=st.none() | st.floats(0, 1),
    rtt_p95_ms=st.none() | st.floats(0, 2000),
)


@given(st.lists(views, max_size=8, unique_by=lambda v: v.node_id), regions)
def test_ranking_is_deterministic_complete_and_tiered(nodes: list[NodeView], region: str) -> None:
    a = rank_edges(nodes, region, NOW, POLICY)
    b = rank_edges(list(reversed(nodes)), region, NOW, POLICY)
    assert a == b  # the input order never matters
    listed = {e.node_id for e in a.edges} | {nid for nid, _ in a.excluded}
    assert listed == {n.node_id for n in nodes}  # every node is placed or explained
    assert all(not n.draining for n in nodes if n.node_id in {e.node_id for e in a.edges})
    tiers = [0 if e.healthy else 1 for e in a.edges]
    assert tiers == sorted(tiers)  # every healthy node before every degraded one
    assert all(e.cost_ms >= 0 and e.reasons for e in a.edges)
