"""``Client`` and ``connect``: the public face of the Python SDK.

The client is a thin facade: every call files something with the pure
``ClientSession`` and waits on a future that the ``SessionRunner`` (the only
code that owns tasks) completes when the matching reply arrives.

Bounded buffers and their slow-consumer policies (STYLE rule 5):

* **Outbox** (``outbox_limit`` messages): ``send`` waits for room, so a
  producer faster than the server is slowed to the commit rate.
* **Feed buffer** (``buffer_limit`` items): when the application does not keep
  up with ``events()``, the session stops accepting feed events, lets the
  application drain half of the buffer and then resumes from the server's
  storage (a resync): memory stays bounded and nothing is lost or repeated.
  Presence pushes that do not fit are dropped and counted.
* **Pending requests** are bounded by the application's own concurrency: each
  one is an awaiting call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol

from relaydesk.client.connlog import ConnectionLog, LogEntry
from relaydesk.client.endpoints import Endpoints, EndpointsState
from relaydesk.client.events import (
    ChannelMembership,
    ClientClosed,
    ClientEvent,
    ConnectError,
    History,
    Lock,
    Metadata,
    OnlineMember,
    Presence,
    RequestError,
    RevisionConflict,
    SendError,
    SendReceipt,
    from_event,
    message_from,
    metadata_item,
)
from relaydesk.client.streaming import TransportName, opener_for
from relaydesk.client.transport import (
    Opener,
    SessionRunner,
    TokenProvider,
    fetch_edges,
)
from relaydesk.clock import Clock, SystemClock
from relaydesk.edges.urls import ws_url
from relaydesk.protocol.client_session import (
    ClientSession,
    Completion,
    ConnectionState,
    ReconnectPolicy,
    ReplyReceived,
    RequestFailed,
    SendDone,
    SendFailed,
    SessionConfig,
    SessionStats,
)
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import (
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Delete,
    HistoryPage,
    HistoryQuery,
    Invite,
    Join,
    Joined,
    Leave,
    LockOk,
    LockQuery,
    LockRequest,
    Locks,
    MetaEntry,
    MetaGet,
    MetaOk,
    MetaSet,
    MetaState,
    PresenceQuery,
    PresenceState,
    Publish,
    StateSet,
    Where,
    WhereNow,
    Who,
    WhoNow,
)

SDK_LABEL = "relaydesk-python/0.1.0"


class CursorStore(Protocol):
    """Where a device's processed feed cursor is kept between runs (docs/protocol.md §4.2).

    A cursor is a position of the client's app (each app has its own positions): keep
    one store per app, user and device.

    ``save`` is called with every acknowledgement the client sends (coalesced,
    at most every ``ack_every`` events or 100 ms); ``load`` once, at ``connect``.
    """

    async def load(self) -> int | None: ...

    async def save(self, pos: int) -> None: ...


class MemoryCursorStore:
    """The default ``CursorStore``: the cursor lives as long as the process.

    A new process then resumes from the cursor the server stored for the device.
    """

    def __init__(self, pos: int | None = None) -> None:
        self.pos = pos

    async def load(self) -> int | None:
        return self.pos

    async def save(self, pos: int) -> None:
        self.pos = pos


class Client:
    """A connected relaydesk session; create it with ``connect``.

    Safe to use from one event loop; every method is a coroutine except
    ``mark_read`` and the read-only properties.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        token: str | TokenProvider,
        *,
        device: str,
        codec: Literal["msgpack", "json"] = "msgpack",
        cursor: int | None = None,
        cursor_store: CursorStore,
        reconnect: ReconnectPolicy,
        heartbeat_s: float | None,
        timeout_s: float | None,
        outbox_limit: int,
        buffer_limit: int,
        window: int,
        receive: bool,
        on_state: Callable[[ConnectionState], None] | None,
        region: str,
        net: str,
        open_timeout: float,
        clock: Clock,
        opener: Opener,
        probe_interval_s: float | None = None,
        probe_timeout_s: float = 2.0,
        directory: str | None = None,
        log_limit: int = 256,
    ) -> None:
        self.device = device
        self._token = token
        self._clock = clock
        self._store = cursor_store
        self._on_state_cb = on_state
        self._session = ClientSession(
            SessionConfig(
                device=device,
                sdk=SDK_LABEL,
                region=region,
                net=net,
                window=window,
                outbox_limit=outbox_limit,
                buffer_limit=buffer_limit,
                heartbeat_s=heartbeat_s,
                timeout_s=timeout_s,
                has_token_provider=not isinstance(token, str),
                max_reconnect_attempts=reconnect.max_attempts,
                surface=receive,
                probe_interval_s=probe_interval_s,
                probe_timeout_s=probe_timeout_s,
            ),
            cursor=cursor,
        )
        subprotocol = SUBPROTOCOL_MSGPACK if codec == "msgpack" else SUBPROTOCOL_JSON
        urls = [url] if isinstance(url, str) else list(url)
        if not [u for u in urls if u] and directory:
            urls = [ws_url(directory)]  # until the directory answers: the node asked
        urls = [u for u in urls if u]
        refresh: Callable[[], Awaitable[list[str]]] | None = None
        if directory:

            async def refresh() -> list[str]:
                current = token if isinstance(token, str) else await token()
                return await fetch_edges(directory, current, region)

        self._runner = SessionRunner(
            self._session,
            endpoints=Endpoints(urls),
            refresh=refresh,
            subprotocol=subprotocol,
            token=token,
            clock=clock,
            reconnect=reconnect,
            open_timeout=open_timeout,
            on_completions=self._complete,
            on_items=self._items_arrived,
            on_state=self._state_changed,
            save_cursor=cursor_store.save,
            opener=opener,
            connection_log=ConnectionLog(log_limit),
        )
        self._sends: dict[str, asyncio.Future[SendReceipt]] = {}
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._state_seen = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def _start(self, login_timeout: float) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._runner.run(), name=f"relaydesk-client-{self.device}"
        )
        self._task.add_done_callback(lambda _: self._wake_everyone())
        try:
            async with asyncio.timeout(login_timeout):
                while not (self._session.logged_in or self._session.terminal):
                    if self._task.done():
                        break
                    self._state_seen.clear()
                    await self._state_seen.wait()
        except TimeoutError:
            await self.aclose()
            msg = f"no login within {login_timeout:g}s"
            if self._runner.last_failure:
                msg += f" (last attempt: {self._runner.last_failure})"
            raise ConnectError(int(ErrorCode.INTERNAL), msg) from None
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            exc = self._task.exception()
            await self.aclose()
            raise ConnectError(int(ErrorCode.INTERNAL), f"connect failed: {exc}") from exc
        if self._session.state is ConnectionState.FAILED:
            err = self._session.last_error
            close = self._runner.last_close
            code = err.code if err else (close[0] if close and close[0] else ErrorCode.INTERNAL)
            msg = err.msg if err else "connection refused"
            await self.aclose()
            raise ConnectError(int(code), msg)

    async def aclose(self) -> None:
        """Close the connection; pending sends and requests fail with ``ClientClosed``.

        Messages still in the outbox are not sent (``unsent`` lists them first if
        you need to keep them).
        """
        if self._closed:
            return
        self._closed = True
        await self._runner.aclose()  # a final ack first: the next run resumes after it
        if self._session.processed_pos:
            # Even if the link is down: a restart resumes after what the app took.
            await self._store.save(self._session.processed_pos)
        self._session.close()
        self._complete(self._session.take_completions())
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # already reported by the runner's log
                pass
        self._wake_everyone()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- properties ------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection state (CONNECTING, CONNECTED, SYNCED, RECONNECTING, CLOSED, FAILED)."""
        return self._session.state

    @property
    def node_url(self) -> str:
        """The node this client is connected to (or tries next)."""
        return self._runner.url

    @property
    def endpoints(self) -> EndpointsState:
        """The candidate nodes, the remembered fallback and the nodes avoided (drained)."""
        return self._runner.endpoints.state(self._clock.monotonic())

    @property
    def connection_log(self) -> list[LogEntry]:
        """This device's recent connection log, oldest first: connects, failed attempts,
        closes with their codes, reconnect waits, RTT samples and server errors (a ring
        of ``log_limit`` entries; docs/doctor.md §connection log).  Attach it to a ticket
        with ``relaydesk.doctor.check_client``."""
        return self._runner.log.entries()

    async def current_token(self) -> str:
        """The token this client logs in with (a fresh one from a token provider)."""
        return self._token if isinstance(self._token, str) else await self._token()

    @property
    def user(self) -> str:
        """The user id, from the server's ``welcome``."""
        return self._session.user

    @property
    def rtt(self) -> float | None:
        """The last heartbeat round-trip time in seconds."""
        return self._session.rtt

    @property
    def clock_skew(self) -> float | None:
        """The server clock minus ours, in seconds, estimated from the last pong."""
        skew = self._session.clock_skew_ms
        return None if skew is None else skew / 1000.0

    @property
    def cursor(self) -> int:
        """The feed position processed by the application (what is acknowledged)."""
        return self._session.processed_pos

    def statistics(self) -> SessionStats:
        """A frozen snapshot of the session's counters and buffer levels."""
        return self._session.statistics()

    def unsent(self) -> list[Publish]:
        """Messages not yet confirmed by the server, in send order."""
        return self._session.unconfirmed()

    # -- sending ---------------------------------------------------------------------

    async def send(
        self,
        to: str,
        body: bytes | str,
        *,
        id: str | None = None,
        enc: str = "",
    ) -> SendReceipt:
        """Publish ``body`` to ``to`` (``user:U``, ``channel:C``, ``dm:A:B`` or ``ch:C``).

        Returns once the server has committed the message durably.  The message
        stays in the outbox across reconnects and is resent with the same id
        until confirmed; the server deduplicates on the id, so it is committed
        once.  Cancelling the call does not withdraw the message.  Raises
        ``SendError`` when the server refuses it for good.
        """
        data = body.encode() if isinstance(body, str) else body
        mid = id or f"{self.device[:30]}-{uuid.uuid4().hex}"
        frame = Publish(id=mid, to=to, body=data, enc=enc)
        fut: asyncio.Future[SendReceipt] = asyncio.get_running_loop().create_future()
        while True:
            self._check_open()
            err = self._session.send(frame, self._clock.monotonic())
            if err is None:
                break
            if err is not ErrorCode.OUTBOX_FULL:
                raise SendError(int(err), f"cannot file message {mid!r}")
            self._room.clear()
            await self._room.wait()
        self._sends[mid] = fut
        self._runner.wake()
        return await asyncio.shield(fut)

    def network_changed(self) -> None:
        """Tell the SDK the device changed networks (Wi-Fi to cellular, a new address,
        back from radio sleep): the connection is dropped and made again at once,
        resuming from the cursor, instead of waiting for a dead TCP connection to
        time out (docs/protocol.md §6.2).  Mobile apps call it from their OS's
        connectivity callback."""
        self._check_open()
        self._runner.network_changed()

    def mark_read(self, conv: str, seq: int) -> None:
        """Mark ``conv`` read up to ``seq``; reaches all your devices (§5.5).

        Fire-and-forget: dropped silently while disconnected.
        """
        self._check_open()
        if self._session.mark_read(conv, seq):
            self._runner.wake()

    # -- requests --------------------------------------------------------------------

    async def _request(self, make: Callable[[int], Any]) -> Any:
        self._check_open()
        rid = self._session.next_rid()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[rid] = fut
        self._session.request(make(rid))
        self._complete(self._session.take_completions())
        self._runner.wake()
        try:
            return await fut
        finally:
            self._requests.pop(rid, None)

    async def join(self, channel: str) -> ChannelMembership:
        """Join ``channel`` (creating it, with you as owner, if it does not exist)."""
        frame: Joined = await self._request(lambda rid: Join(rid=rid, channel=channel))
        return ChannelMembership(channel=frame.channel, conv=frame.conv, role=frame.role)

    async def leave(self, channel: str) -> None:
        """Leave ``channel``."""
        await self._request(lambda rid: Leave(rid=rid, channel=channel))

    async def invite(
        self,
        channel: str,
        user: str,
        role: Literal["owner", "member"] = "member",
    ) -> None:
        """Add ``user`` to ``channel`` (owners only)."""
        await self._request(lambda rid: Invite(rid=rid, channel=channel, user=user, role=role))

    async def delete(self, conv: str, seq: int) -> None:
        """Delete your message ``seq`` of ``conv``; members see a ``Deletion``."""
        await self._request(lambda rid: Delete(rid=rid, conv=conv, seq=seq))

    async def history(
        self,
        conv: str,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> History:
        """A page of ``conv``'s messages ascending by seq (§5.7).

        ``before``: the ``limit`` messages just before that seq; ``after``: those
        just after; neither: the latest ``limit``.
        """
        page: HistoryPage = await self._request(
            lambda rid: HistoryQuery(rid=rid, conv=conv, before=before, after=after, limit=limit)
        )
        msgs = [message_from(e) for e in page.items if e.kind == "msg"]
        return History(conv=page.conv, messages=msgs, more=page.more)

    async def presence(self, users: list[str]) -> list[Presence]:
        """Whether each of ``users`` is online, and on how many devices."""
        state: PresenceState = await self._request(
            lambda rid: PresenceQuery(rid=rid, users=list(users))
        )
        return [
            Presence(user=u.user, online=u.online, devices=u.devices, since=u.since)
            for u in state.users
        ]

    # -- metadata (docs/protocol.md §5.11) -------------------------------------------

    async def _meta_set(
        self,
        op: Literal["set", "update", "remove"],
        scope: Literal["channel", "user"],
        target: str,
        entries: list[MetaEntry],
        major: int,
        lock: str,
    ) -> int:
        reply: MetaOk = await self._request(
            lambda rid: MetaSet(
                rid=rid,
                scope=scope,
                target=target,
                op=op,
                items=entries,
                major=major,
                lock=lock,
            )
        )
        return reply.major

    @staticmethod
    def _entries(items: Mapping[str, str] | Sequence[MetaEntry]) -> list[MetaEntry]:
        if isinstance(items, Mapping):
            return [MetaEntry(key=k, value=v) for k, v in items.items()]
        return list(items)

    async def set_metadata(
        self,
        scope: Literal["channel", "user"],
        target: str,
        items: Mapping[str, str] | Sequence[MetaEntry],
        *,
        major: int = -1,
        lock: str = "",
    ) -> int:
        """Add or overwrite items of ``channel``/``user`` ``target``; the new revision.

        ``items``: a mapping, or ``MetadataEntry(key, value, rev)`` for per-item
        compare-and-set (``rev`` 0: must not exist yet).  ``major`` >= 0: the whole
        object must still be at that revision.  A lost race raises
        ``RevisionConflict`` carrying the current revision."""
        return await self._meta_set("set", scope, target, self._entries(items), major, lock)

    async def update_metadata(
        self,
        scope: Literal["channel", "user"],
        target: str,
        items: Mapping[str, str] | Sequence[MetaEntry],
        *,
        major: int = -1,
        lock: str = "",
    ) -> int:
        """Overwrite existing items only (NOT_FOUND if one is missing); the new revision."""
        return await self._meta_set("update", scope, target, self._entries(items), major, lock)

    async def remove_metadata(
        self,
        scope: Literal["channel", "user"],
        target: str,
        keys: Sequence[str | MetaEntry] = (),
        *,
        major: int = -1,
        lock: str = "",
    ) -> int:
        """Remove the items named (every item if ``keys`` is empty); the new revision."""
        entries = [k if isinstance(k, MetaEntry) else MetaEntry(key=k) for k in keys]
        return await self._meta_set("remove", scope, target, entries, major, lock)

    async def get_metadata(self, scope: Literal["channel", "user"], target: str) -> Metadata:
        """The whole object as committed now (a channel's: members only)."""
        state: MetaState = await self._request(
            lambda rid: MetaGet(rid=rid, scope=scope, target=target)
        )
        return Metadata(
            scope=scope,
            target=state.target,
            major=state.major,
            items={i.key: metadata_item(i) for i in state.items},
        )

    # -- locks (docs/protocol.md §5.12) -----------------------------------------------

    async def _lock(
        self,
        channel: str,
        op: Literal["set", "remove", "acquire", "release", "revoke"],
        name: str,
        ttl_s: int = 10,
        wait: bool = False,
    ) -> LockOk:
        reply: LockOk = await self._request(
            lambda rid: LockRequest(
                rid=rid, channel=channel, op=op, name=name, ttl_s=ttl_s, wait=wait
            )
        )
        return reply

    async def set_lock(self, channel: str, name: str, ttl_s: int = 10) -> None:
        """Create lock ``name`` of ``channel`` (or change its TTL); owners only.

        The TTL is how long the lock stays held after its holder's last device
        disconnected."""
        await self._lock(channel, "set", name, ttl_s)

    async def remove_lock(self, channel: str, name: str) -> None:
        """Delete the lock (owners only)."""
        await self._lock(channel, "remove", name)

    async def acquire_lock(self, channel: str, name: str, *, wait: bool = False) -> bool:
        """Take the lock: True if you hold it now.  Held by another: LOCK_HELD
        (``RequestError``), or with ``wait`` False and you join its fair queue; the
        ``LockEvent`` naming you ``holder`` then says when it is yours."""
        reply = await self._lock(channel, "acquire", name, wait=wait)
        return reply.holder == self.user

    async def release_lock(self, channel: str, name: str) -> None:
        """Let the lock go (the first waiter gets it), or stop waiting for it;
        LOCK_NOT_HELD if neither."""
        await self._lock(channel, "release", name)

    async def revoke_lock(self, channel: str, name: str) -> None:
        """Take the lock from its holder (owners only); the first waiter gets it."""
        await self._lock(channel, "revoke", name)

    async def locks(self, channel: str) -> list[Lock]:
        """The channel's locks, holders and queues (members only)."""
        reply: Locks = await self._request(lambda rid: LockQuery(rid=rid, channel=channel))
        return [
            Lock(
                name=i.name, ttl_s=i.ttl_s, holder=i.holder, since=i.since, waiters=tuple(i.waiters)
            )
            for i in reply.items
        ]

    # -- presence state (docs/protocol.md §5.13) ---------------------------------------

    async def set_state(self, channel: str, state: Mapping[str, str]) -> None:
        """Publish your presence state in ``channel`` (replaces the previous one; an
        empty mapping clears it).  Members see it in ``who_now`` and as a
        ``StateEvent``; it is cleared when you have no connected device left."""
        await self._request(lambda rid: StateSet(rid=rid, channel=channel, state=dict(state)))

    async def who_now(self, channel: str) -> list[OnlineMember]:
        """The channel's members online now, with their states (members only)."""
        reply: Who = await self._request(lambda rid: WhoNow(rid=rid, channel=channel))
        return [
            OnlineMember(user=u.user, devices=u.devices, since=u.since, state=dict(u.state))
            for u in reply.users
        ]

    async def where_now(self, user: str) -> dict[str, dict[str, str]] | None:
        """``user``'s channels with their state there, or None while offline."""
        reply: Where = await self._request(lambda rid: WhereNow(rid=rid, user=user))
        if not reply.online:
            return None
        return {c.channel: dict(c.state) for c in reply.channels}

    # -- receiving -------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ClientEvent]:
        """Every feed event (and presence change) exactly once, in feed order.

        Own messages sent from this device are not included (their receipt is
        the return value of ``send``); those from your other devices are.  An
        event counts as processed (and is acknowledged) once it is yielded.
        Ends when the client is closed or fails.  Use one consumer at a time.
        """
        while True:
            item = self._session.next_item(self._clock.monotonic())
            if item is not None:
                self._runner.wake()  # an ack or a resync may now be due
                yield from_event(item)
                continue
            if self._session.terminal:
                return
            self._items.clear()
            await self._items.wait()

    # -- plumbing --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._session.terminal:
            raise ClientClosed("client is closed" if self._closed else "client failed")

    def _complete(self, done: list[Completion]) -> None:
        for c in done:
            if isinstance(c, SendDone):
                fut = self._sends.pop(c.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(SendReceipt(c.id, c.conv, c.seq, c.pos, c.ts, c.dup))
            elif isinstance(c, SendFailed):
                fut = self._sends.pop(c.id, None)
                if fut is not None and not fut.done():
                    exc = (
                        ClientClosed(c.msg) if self._session.terminal else SendError(c.code, c.msg)
                    )
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: a cancelled send() must not warn
            elif isinstance(c, ReplyReceived):
                rfut = self._requests.get(c.rid)
                if rfut is not None and not rfut.done():
                    rfut.set_result(c.frame)
            elif isinstance(c, RequestFailed):
                rfut = self._requests.get(c.rid)
                if rfut is not None and not rfut.done():
                    if self._session.terminal:
                        rfut.set_exception(ClientClosed(c.msg))
                    elif c.code == ErrorCode.REVISION_CONFLICT and c.rev is not None:
                        rfut.set_exception(RevisionConflict(c.code, c.msg, c.rev))
                    else:
                        rfut.set_exception(RequestError(c.code, c.msg))
        if not self._session.outbox_full:
            self._room.set()

    def _items_arrived(self) -> None:
        self._items.set()

    def _state_changed(self, state: ConnectionState) -> None:
        self._state_seen.set()
        if state in (ConnectionState.CLOSED, ConnectionState.FAILED):
            self._wake_everyone()
        if self._on_state_cb is not None:
            self._on_state_cb(state)

    def _wake_everyone(self) -> None:
        self._items.set()
        self._room.set()
        self._state_seen.set()
        for fut in self._sends.values():
            if not fut.done() and self._session.terminal:
                fut.set_exception(ClientClosed())
                fut.exception()
        for rfut in self._requests.values():
            if not rfut.done() and self._session.terminal:
                rfut.set_exception(ClientClosed())


class _Connecting:
    """What ``connect`` returns: await it, or use it as ``async with``."""

    def __init__(
        self,
        factory: Callable[[int | None], Client],
        cursor: int | None,
        store: CursorStore,
        timeout: float,
    ) -> None:
        self._factory = factory
        self._cursor = cursor
        self._store = store
        self._timeout = timeout
        self._client: Client | None = None

    async def _open(self) -> Client:
        cursor = self._cursor if self._cursor is not None else await self._store.load()
        client = self._factory(cursor)
        await client._start(self._timeout)
        return client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._open().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()


def connect(
    url: str | Sequence[str],
    token: str | TokenProvider,
    *,
    device: str,
    codec: Literal["msgpack", "json"] = "msgpack",
    cursor: int | None = None,
    cursor_store: CursorStore | None = None,
    reconnect: ReconnectPolicy = ReconnectPolicy(),  # noqa: B008 - frozen value object
    heartbeat_s: float | None = None,
    timeout_s: float | None = None,
    outbox_limit: int = 10_000,
    buffer_limit: int = 10_000,
    window: int = 256,
    receive: bool = True,
    on_state: Callable[[ConnectionState], None] | None = None,
    region: str = "",
    net: str = "",
    probe_interval_s: float | None = None,
    probe_timeout_s: float = 2.0,
    connect_timeout: float = 15.0,
    directory: str | None = None,
    open_timeout: float = 5.0,
    clock: Clock | None = None,
    opener: Opener | None = None,
    transport: TransportName = "auto",
    log_limit: int = 256,
) -> _Connecting:
    """Connect to a relaydesk gateway and log in.

    ``await connect(...)`` returns a logged-in ``Client``; ``async with
    connect(...) as client`` also closes it.  ``token`` is a token string or an
    async callable returning a fresh one (then tokens are refreshed before they
    expire and on a 4011 close).  ``device`` names this installation.

    ``cursor`` (or ``cursor_store``) resumes the feed after a position; by
    default the server resumes after the device's last acknowledged position.
    ``reconnect`` sets the jittered back-off; ``heartbeat_s``/``timeout_s``
    override the server's heartbeat (``heartbeat_s`` is also asked of the server,
    which clamps it to 2-120 s and times out after three intervals, docs/protocol.md
    §6.2).  ``outbox_limit`` bounds unconfirmed messages, ``buffer_limit`` the feed
    items waiting for ``events()``,
    ``window`` the publishes in flight.  ``receive=False`` makes a send-only
    client that acknowledges the feed without buffering it.  ``probe_interval_s``
    turns on network-quality probes (RTT, loss, jitter reported to the server with
    ``region``/``net`` labels; off by default); a probe ping unanswered within
    ``probe_timeout_s`` counts as lost (over TCP a dropped packet arrives late
    rather than never, so a real-time threshold makes loss visible).  ``on_state`` is
    called on every state change.  Raises ``ConnectError`` if the login fails
    for good or does not succeed within ``connect_timeout`` seconds (retrying
    with back-off meanwhile).

    ``url`` may be a list of node URLs, best first, and ``directory`` the HTTP base URL
    of any node: the SDK then asks the edge directory for the nodes to try in
    ``region`` (``url`` may then be empty), connects to the first that answers, moves
    on at once when a node is drained (``moved``, 4061) and on failure, and remembers a
    working fallback for ten minutes (docs/scaling.md).  ``Client.node_url`` and
    ``Client.endpoints`` say where it is.

    ``Client.connection_log`` keeps the last ``log_limit`` connection events (connects,
    failed attempts, closes with codes, reconnect waits, RTT samples, server errors)
    for a support ticket (``relaydesk.doctor.check_client``).
    ``transport`` is ``"auto"`` (a WebSocket, or the HTTP-streaming fallback when the
    upgrade is refused or stalls, docs/protocol.md §9), ``"websocket"`` or ``"stream"``;
    ``opener``, when given, replaces that choice.
    """
    store = cursor_store or MemoryCursorStore()
    chosen = opener or opener_for(transport, clock)

    def factory(start: int | None) -> Client:
        return Client(
            url,
            token,
            device=device,
            codec=codec,
            cursor=start,
            cursor_store=store,
            reconnect=reconnect,
            heartbeat_s=heartbeat_s,
            timeout_s=timeout_s,
            outbox_limit=outbox_limit,
            buffer_limit=buffer_limit,
            window=window,
            receive=receive,
            on_state=on_state,
            region=region,
            net=net,
            open_timeout=open_timeout,
            clock=clock or SystemClock(),
            opener=chosen,
            probe_interval_s=probe_interval_s,
            probe_timeout_s=probe_timeout_s,
            directory=directory,
            log_limit=log_limit,
        )

    return _Connecting(factory, cursor, store, connect_timeout)
