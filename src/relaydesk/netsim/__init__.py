"""``relaydesk netsim``: a userspace TCP impairment proxy (latency, jitter, bandwidth, cuts).

    netsim = await open_netsim(("127.0.0.1", 0), ("127.0.0.1", 8420),
                               downstream_profile=LinkProfile(latency_ms=50, jitter_ms=10))
    control = await open_control(netsim, ("127.0.0.1", 0))
    ...
    await control.aclose()
    await netsim.aclose()

See docs/netsim.md for the control API and the limits of a userspace proxy.
"""

from relaydesk.netsim.control import ControlServer, CutRequest, ImpairRequest, open_control
from relaydesk.netsim.proxy import CutMode, Limits, Netsim, NetsimState, NetsimStats, open_netsim
from relaydesk.netsim.schedule import (
    Direction,
    LinkProfile,
    ReleaseSchedule,
    TokenBucket,
    chunk_delay,
    parse_bandwidth,
)

__all__ = [
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
