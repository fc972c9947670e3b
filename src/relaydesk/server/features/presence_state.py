"""Presence state, whoNow and whereNow (docs/protocol.md §5.13).

State changes are ``StateOp`` operations of the hub's group commit (a ``state``
event in the channel's feed); snapshots join the stored states with the hub's
cluster-wide presence.  A sweeper clears, once a second, the states of users with no
connected device anywhere (in a cluster only after the other nodes' presence has
been heard), so a state lives while its user is online, as in Agora.
"""

from __future__ import annotations

from relaydesk.clock import millis
from relaydesk.protocol.addresses import channel_conversation, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import ChannelState, OnlineMember, Where
from relaydesk.server.cluster.periodic import Periodic
from relaydesk.server.routing.hub import Hub
from relaydesk.storage import Tx
from relaydesk.storage.presence_state import (
    StateOp,
    channel_states_tx,
    stateful_users_tx,
    user_states_tx,
)

STATE_SWEEP_S = 1.0


class PresenceStateService:
    def __init__(self, hub: Hub, *, settle_s: float = 0.0) -> None:
        self.hub = hub
        self._settle_s = settle_s
        self._started = 0.0
        self._sweeper = Periodic("state-sweeper", STATE_SWEEP_S, self._sweep_step)

    async def who_now(self, app: str, reader: str | None, channel: str) -> list[OnlineMember]:
        """The channel's online members with their states (``reader`` must be one)."""
        conv = channel_conversation(channel)
        store = self.hub.store

        def run(tx: Tx) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
            if reader is not None and not store.is_member_tx(tx, app, conv, reader):
                raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of channel {channel!r}")
            return store.members_tx(tx, app, conv.id), channel_states_tx(tx, app, conv.id)

        members, states = await self.hub.db.read(run)
        return [
            OnlineMember(
                user=p.user, devices=p.devices, since=p.since, state=states.get(p.user, {})
            )
            for p in self.hub.presence(app, sorted(members))
            if p.online
        ]

    async def where_now(self, rid: int, app: str, user: str) -> Where:
        [presence] = self.hub.presence(app, [user])
        if not presence.online:
            return Where(rid=rid, user=user, online=False)
        store = self.hub.store

        def run(tx: Tx) -> tuple[list[str], dict[str, dict[str, str]]]:
            return store.channels_of_tx(tx, app, user), user_states_tx(tx, app, user)

        convs, states = await self.hub.db.read(run)
        channels = [
            ChannelState(channel=conv.removeprefix("ch:"), state=states.get(conv, {}))
            for conv in sorted(convs)
        ]
        return Where(rid=rid, user=user, online=True, channels=channels)

    async def set_state(self, app: str, user: str, channel: str, state: dict[str, str]) -> int:
        """Set ``user``'s state as the app's backend; the event's position."""
        outcome = await self.hub.apply(
            StateOp(
                app=app,
                actor=user,
                device="server",
                conv=channel_conversation(channel),
                user=user,
                state=tuple(sorted(state.items())),
                ts=millis(self.hub.clock),
            )
        )
        if outcome.error is not None:
            raise outcome.error
        assert outcome.event is not None
        return outcome.event.pos

    # -- the sweeper -------------------------------------------------------------

    def start(self) -> None:
        if not self._sweeper.running:
            self._started = self.hub.clock.monotonic()
        self._sweeper.start()

    async def aclose(self) -> None:
        await self._sweeper.aclose()

    async def _sweep_step(self) -> None:
        if self.hub.clock.monotonic() - self._started >= self._settle_s:
            await self.sweep()

    async def sweep(self) -> int:
        """Clear the states of users online nowhere; how many were cleared."""
        hub = self.hub
        cleared = 0
        for app, conv, user in await hub.db.read(stateful_users_tx):
            [presence] = hub.presence(app, [user])
            if presence.online:
                continue
            outcome = await hub.apply(
                StateOp(
                    app=app,
                    actor="",
                    device="server",
                    conv=resolve(conv, user),
                    user=user,
                    state=(),
                    ts=millis(hub.clock),
                    privileged=True,
                )
            )
            cleared += outcome.error is None
        return cleared


__all__ = ["PresenceStateService"]
