"""The diagnosis rules: pure functions from a :class:`Snapshot` to findings.

Theory of operation
-------------------
Each rule looks for one pattern and returns zero or more :class:`Finding` objects with the
numbers that convinced it.  Rules never read a clock or a database and iterate in sorted
order, so the same snapshot always gives the same findings.  Thresholds are written next to
the rule with the reason for them; they are deliberately conservative, because a false
alarm on a healthy window costs a customer's trust more than a missed low-grade finding
(which the agent still sees in the internal note).

Rules (name: pattern -> layer); none of them knows a scenario, each reads measured
stages, counters or the client's own evidence and compares them with a baseline (the
other devices, nodes or minutes of the same window) or a documented absolute bound:

* ``undelivered_device``: a device stops acknowledging positions other devices of the
  conversation acknowledge, acknowledges nothing later, and its connection stays up
  -> server_defect;
* ``slow_consumer``: a device's acknowledgements keep progressing but arrive late, or
  its queue overflows -> client;
* ``commit_queue``: ``commit_wait`` dominates while ``commit`` is normal -> server_config
  (``storage.commit_batch_max``);
* ``slow_storage``: the commits themselves are slow -> server_config (the database);
* ``bound_binds``: any bounded setting whose saturation counter shows it binding ->
  server_config, named with its value and a suggested value from the measured demand;
* ``node_outlier``: one node of a region is worse than its siblings -> network;
* ``node_victims``: several devices fail together on one node and nowhere else ->
  network (their per-device client findings are suppressed by the engine);
* ``distance``: cross-region RTT against the fibre propagation floor -> none/network;
* ``reconnect_loop``: a device keeps coming back after abnormal closes -> client
  (normal short sessions are rejected, with the reason);
* ``old_sdk``: devices on an older SDK doing worse than the others -> client;
* ``clock_skew``: NTP-style offsets from doctor reports and probe timestamps, or most
  probes rejected -> client;
* ``client_lint``: SDK configuration and network problems the device's doctor found;
* ``client_log``: a reconnect loop in the device's own connection log (attempts that
  never opened -> network; 4011 -> client; link deaths -> network; other codes -> client).

A rule returns findings and :class:`Rejected` hypotheses (what it considered and why it
did not conclude); the engine keeps both for the internal note.
"""

from __future__ import annotations

from typing import Final

from relaydesk.desk.diagnosis.rules._common import (
    ACKED,
    DEFAULT_COMMIT_BATCH_MAX,
    UNEXPECTED,
    Rule,
    at,
)
from relaydesk.desk.diagnosis.rules.capacity import bound_binds, commit_queue, slow_storage
from relaydesk.desk.diagnosis.rules.clients import (
    client_lint,
    client_log,
    clock_skew,
    old_sdk,
    reconnect_loop,
)
from relaydesk.desk.diagnosis.rules.delivery import slow_consumer, undelivered_device
from relaydesk.desk.diagnosis.rules.network import distance, node_outlier, node_victims

RULES: Final[tuple[Rule, ...]] = (
    undelivered_device,
    slow_consumer,
    commit_queue,
    slow_storage,
    bound_binds,
    node_outlier,
    node_victims,
    distance,
    reconnect_loop,
    old_sdk,
    clock_skew,
    client_lint,
    client_log,
)

__all__ = [
    "ACKED",
    "DEFAULT_COMMIT_BATCH_MAX",
    "RULES",
    "UNEXPECTED",
    "Rule",
    "at",
    "bound_binds",
    "client_lint",
    "client_log",
    "clock_skew",
    "commit_queue",
    "distance",
    "node_outlier",
    "node_victims",
    "old_sdk",
    "reconnect_loop",
    "slow_consumer",
    "slow_storage",
    "undelivered_device",
]
