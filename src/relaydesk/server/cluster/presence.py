"""Who is connected to the other nodes of the cluster (docs/operations.md).

Theory of operation
-------------------
Each node knows its own connections.  It tells the others how many devices of a user
it holds whenever that number changes, and sends its whole list every presence
interval; the whole list also proves the node is alive.  ``RemotePresence`` is the
receiving side: per user, the device count and online-since of every other node.

The bus may lose a change; the next full list repairs it.  A full list longer than one
message comes in parts and replaces the node's entries only once every part arrived,
so a user never blinks offline between two parts.  A node that restarts has a new
``epoch``: its old entries are dropped at once.  A node silent for ``expiry_s``
(crashed, partitioned) is forgotten, its users offline.

Every method returns the users whose remote device count changed, with the count
before, so the hub can tell a cluster-wide online/offline flip from a device joining.

Pure: no I/O, time is a parameter.
"""

from __future__ import annotations

from relaydesk.server.cluster.records import Online, PresenceRecord

Key = tuple[str, str]  # (app, user)


class RemotePresence:
    """Device counts of users on the other nodes."""

    def __init__(self, node: str, expiry_s: float) -> None:
        self.node = node
        self.expiry_s = expiry_s
        self._by_node: dict[str, dict[Key, Online]] = {}
        self._epoch: dict[str, str] = {}
        self._seen: dict[str, float] = {}
        self._staging: dict[str, tuple[str, int, dict[Key, Online]]] = {}
        self._totals: dict[Key, tuple[int, int]] = {}  # devices, earliest since

    def devices(self, key: Key) -> tuple[int, int]:
        """(devices on other nodes, earliest online-since of those) of ``key``."""
        return self._totals.get(key, (0, 0))

    @property
    def nodes(self) -> list[str]:
        return sorted(self._by_node)

    def apply(self, record: PresenceRecord, now: float) -> dict[Key, int]:
        """Take a record from ``record.node``; return {user: devices before} of changes."""
        node = record.node
        if node == self.node:
            return {}
        changed: dict[Key, int] = {}
        if self._epoch.get(node) != record.epoch:
            self._forget(node, changed)  # restarted: what it said before is void
            self._epoch[node] = record.epoch
        self._seen[node] = now
        entries = self._by_node.setdefault(node, {})
        if not record.full:
            for online in record.entries:
                self._set(node, entries, online, changed)
            return changed
        epoch, expected, staged = self._staging.get(node, (record.epoch, 0, {}))
        if record.part == 0 or epoch != record.epoch or record.part != expected:
            if record.part != 0:
                self._staging.pop(node, None)  # a part went missing: wait for the next list
                return changed
            staged = {}
        for online in record.entries:
            staged[(online.app, online.user)] = online
        if record.part + 1 < record.parts:
            self._staging[node] = (record.epoch, record.part + 1, staged)
            return changed
        self._staging.pop(node, None)
        for key in [k for k in entries if k not in staged]:
            self._set(node, entries, Online(key[0], key[1], 0, 0), changed)
        for online in staged.values():
            self._set(node, entries, online, changed)
        return changed

    def expire(self, now: float) -> dict[Key, int]:
        """Forget nodes silent for ``expiry_s``; return {user: devices before} of changes."""
        changed: dict[Key, int] = {}
        for node, seen in list(self._seen.items()):
            if now - seen > self.expiry_s:
                self._forget(node, changed)
                del self._seen[node]
                self._epoch.pop(node, None)
        return changed

    def _forget(self, node: str, changed: dict[Key, int]) -> None:
        entries = self._by_node.pop(node, {})
        self._staging.pop(node, None)
        for key in entries:
            changed.setdefault(key, self.devices(key)[0])
        self._recount(entries)

    def _set(
        self, node: str, entries: dict[Key, Online], online: Online, changed: dict[Key, int]
    ) -> None:
        key = (online.app, online.user)
        old = entries.get(key)
        if (old.devices if old else 0) == online.devices:
            return
        changed.setdefault(key, self.devices(key)[0])
        if online.devices > 0:
            entries[key] = online
        else:
            entries.pop(key, None)
        self._recount({key: online})

    def _recount(self, keys: dict[Key, Online]) -> None:
        for key in keys:
            devices, since = 0, 0
            for entries in self._by_node.values():
                online = entries.get(key)
                if online is not None:
                    devices += online.devices
                    since = online.since if since == 0 else min(since, online.since)
            if devices:
                self._totals[key] = (devices, since)
            else:
                self._totals.pop(key, None)
