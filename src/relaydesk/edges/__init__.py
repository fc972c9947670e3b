"""Edge selection: where a client should connect (docs/scaling.md, docs/operations.md).

Pure: the node registry's snapshot and measured quality go in, an ordered list of nodes
with the reason for each place comes out.  No I/O, time is a parameter.
"""

from relaydesk.edges.geo import (
    CITIES,
    DEFAULT_REGION_CITIES,
    city_for,
    great_circle_km,
    propagation_floor_rtt_ms,
)
from relaydesk.edges.ranking import EdgeRanking, NodeView, RankedEdge, RankingPolicy, rank_edges

__all__ = [
    "CITIES",
    "DEFAULT_REGION_CITIES",
    "EdgeRanking",
    "NodeView",
    "RankedEdge",
    "RankingPolicy",
    "city_for",
    "great_circle_km",
    "propagation_floor_rtt_ms",
    "rank_edges",
]
