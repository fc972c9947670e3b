"""``relaydesk send`` and ``relaydesk tail``: poke and watch a running server.

Both are thin users of the public SDK (``relaydesk.client``).  A token comes from
``--token`` or is minted locally from ``--app/--secret/--user`` (development
only: whoever holds the app secret can act as any user).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import typer

from relaydesk.cli.api import UNREACHABLE
from relaydesk.cli.endpoints import DEFAULT_WS_URL, WS_ENV, EndpointError, check_gateway, ws_url
from relaydesk.client import (
    ClientEvent,
    ConnectError,
    Deletion,
    LockEvent,
    MembershipChange,
    Message,
    MetadataChange,
    PresenceEvent,
    ReadMarker,
    RelaydeskError,
    SendReceipt,
    StateEvent,
    connect,
)
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from relaydesk.protocol.tokens import mint_token

DEFAULT_URL = DEFAULT_WS_URL

UrlOpt = Annotated[
    str | None,
    typer.Option(
        help=f"Gateway WebSocket URL (an http:// node address works too) [default: {DEFAULT_URL}].",
        envvar=WS_ENV,
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        help="Connection token (else minted from --app/--secret/--user).", envvar="RELAYDESK_TOKEN"
    ),
]
AppOpt = Annotated[str | None, typer.Option("--app", help="App id, to mint a dev token.")]
SecretOpt = Annotated[
    str | None, typer.Option(help="App secret, to mint a dev token.", envvar="RELAYDESK_APP_SECRET")
]
UserOpt = Annotated[str | None, typer.Option(help="User id, to mint a dev token.")]
JoinOpt = Annotated[
    list[str] | None,
    typer.Option("--join", help="Join this channel first (repeatable); granted in a dev token."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
CodecOpt = Annotated[str, typer.Option(help="msgpack or json subprotocol.")]


def _token(
    token: str | None,
    app_id: str | None,
    secret: str | None,
    user: str | None,
    device: str,
    channels: list[str],
) -> str:
    if token:
        return token
    if not (app_id and secret and user):
        typer.echo("relaydesk: give --token, or --app, --secret and --user", err=True)
        raise typer.Exit(2)
    try:
        return mint_token(
            app_id,
            secret,
            user,
            now=time.time(),
            ttl_s=24 * 3600,
            device=device,
            channels={c: "member" for c in channels},
        )
    except ValueError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None


def _clock(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]


def event_json(event: ClientEvent) -> dict[str, Any]:
    """The ``--json`` form of one event."""
    if isinstance(event, Message):
        return {
            "type": "message",
            "conv": event.conv,
            "seq": event.seq,
            "pos": event.pos,
            "from": event.sender,
            "device": event.device,
            "id": event.id,
            "ts": event.ts,
            "text": event.text,
            "enc": event.enc,
        }
    if isinstance(event, ReadMarker):
        return {
            "type": "read",
            "conv": event.conv,
            "seq": event.seq,
            "pos": event.pos,
            "user": event.user,
            "device": event.device,
            "ts": event.ts,
        }
    if isinstance(event, Deletion):
        return {
            "type": "delete",
            "conv": event.conv,
            "seq": event.seq,
            "pos": event.pos,
            "from": event.sender,
            "ts": event.ts,
        }
    if isinstance(event, MembershipChange):
        return {
            "type": event.kind,
            "conv": event.conv,
            "pos": event.pos,
            "user": event.user,
            "actor": event.actor,
            "role": event.role,
            "ts": event.ts,
        }
    if isinstance(event, MetadataChange):
        return {
            "type": "metadata",
            "scope": event.scope,
            "target": event.target,
            "op": event.op,
            "major": event.major,
            "pos": event.pos,
            "actor": event.actor,
            "items": {k: i.value for k, i in event.items.items()},
            "removed": list(event.removed),
            "ts": event.ts,
        }
    if isinstance(event, StateEvent):
        return {
            "type": "state",
            "conv": event.conv,
            "pos": event.pos,
            "user": event.user,
            "state": event.state,
            "ts": event.ts,
        }
    if isinstance(event, LockEvent):
        return {
            "type": "lock",
            "conv": event.conv,
            "pos": event.pos,
            "op": event.op,
            "name": event.name,
            "holder": event.holder,
            "waiters": list(event.waiters),
            "by": event.by,
            "ts": event.ts,
        }
    return {
        "type": "presence",
        "user": event.user,
        "online": event.online,
        "devices": event.devices,
        "ts": event.ts,
    }


def event_line(event: ClientEvent) -> str:
    """The human form of one event: time, conversation, seq, sender, text."""
    if isinstance(event, Message):
        return f"{_clock(event.ts)}  {event.conv}  #{event.seq}  {event.sender}: {event.text}"
    if isinstance(event, ReadMarker):
        return f"{_clock(event.ts)}  {event.conv}  #{event.seq}  {event.user} read up to here"
    if isinstance(event, Deletion):
        return f"{_clock(event.ts)}  {event.conv}  #{event.seq}  {event.sender} deleted it"
    if isinstance(event, MembershipChange):
        verb = "joined" if event.kind == "join" else "left"
        return f"{_clock(event.ts)}  {event.conv}  {event.user} {verb} ({event.role})"
    if isinstance(event, MetadataChange):
        what = ", ".join(f"{k}={i.value!r}" for k, i in event.items.items())
        gone = ", ".join(f"-{k}" for k in event.removed)
        detail = "; ".join(x for x in (what, gone) if x)
        return (
            f"{_clock(event.ts)}  metadata {event.scope}:{event.target}  rev {event.major}"
            f"  {event.actor}: {event.op} {detail}"
        )
    if isinstance(event, StateEvent):
        shown = ", ".join(f"{k}={v}" for k, v in event.state.items()) or "(cleared)"
        return f"{_clock(event.ts)}  {event.conv}  {event.user} state {shown}"
    if isinstance(event, LockEvent):
        held = f"held by {event.holder}" if event.holder else "free"
        return f"{_clock(event.ts)}  {event.conv}  lock {event.name} {event.op}: {held}"
    assert isinstance(event, PresenceEvent)
    state = f"online ({event.devices} devices)" if event.online else "offline"
    return f"{_clock(event.ts)}  presence  {event.user} {state}"


def _receipt_line(r: SendReceipt, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"id": r.id, "conv": r.conv, "seq": r.seq, "pos": r.pos, "ts": r.ts, "dup": r.dup}
        )
    return f"sent {r.conv} #{r.seq} pos={r.pos} id={r.id}" + (" (dup)" if r.dup else "")


def send(
    text: Annotated[
        str | None, typer.Argument(help="Message text; lines of stdin if absent.")
    ] = None,
    to: Annotated[str, typer.Option(help="user:U, channel:C, dm:A:B or ch:C.")] = "",
    url: UrlOpt = None,
    token: TokenOpt = None,
    app_id: AppOpt = None,
    secret: SecretOpt = None,
    user: UserOpt = None,
    device: Annotated[str, typer.Option(help="Device id.")] = "cli-send",
    join: JoinOpt = None,
    as_json: JsonOpt = False,
    codec: CodecOpt = "msgpack",
) -> None:
    """Send a message (or each line of stdin) and print the server's acknowledgement."""
    if not to:
        typer.echo("relaydesk: --to is required (user:U or channel:C)", err=True)
        raise typer.Exit(2)
    channels = list(join or [])
    tok = _token(token, app_id, secret, user, device, channels)
    gateway = _gateway(url)
    texts = [text] if text is not None else (line.rstrip("\n") for line in sys.stdin)

    async def run() -> None:
        await check_gateway(gateway, _subprotocol(codec))
        async with connect(
            gateway, tok, device=device, codec=_codec(codec), receive=False, connect_timeout=10.0
        ) as client:
            for ch in channels:
                await client.join(ch)
            for body in texts:
                if body:
                    typer.echo(_receipt_line(await client.send(to, body), as_json))

    _run(run())


def tail(
    url: UrlOpt = None,
    token: TokenOpt = None,
    app_id: AppOpt = None,
    secret: SecretOpt = None,
    user: UserOpt = None,
    device: Annotated[str, typer.Option(help="Device id.")] = "cli-tail",
    join: JoinOpt = None,
    cursor: Annotated[
        int | None, typer.Option(help="Start after this feed position (0: all history).")
    ] = None,
    count: Annotated[int, typer.Option(help="Exit after this many events (0: follow).")] = 0,
    as_json: JsonOpt = False,
    codec: CodecOpt = "msgpack",
) -> None:
    """Print every event of your feed as it arrives: time, conversation, seq, sender, text."""
    channels = list(join or [])
    tok = _token(token, app_id, secret, user, device, channels)
    gateway = _gateway(url)

    async def run() -> None:
        await check_gateway(gateway, _subprotocol(codec))
        async with connect(
            gateway, tok, device=device, codec=_codec(codec), cursor=cursor, connect_timeout=10.0
        ) as client:
            for ch in channels:
                await client.join(ch)
            typer.echo(f"tailing as {client.user} on {device} (Ctrl-C to stop)", err=True)
            seen = 0
            async for event in client.events():
                line = json.dumps(event_json(event)) if as_json else event_line(event)
                typer.echo(line)
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    break

    _run(run())


def _gateway(url: str | None) -> str:
    try:
        return ws_url(url or DEFAULT_URL)
    except EndpointError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None


def _subprotocol(codec: str) -> str:
    return SUBPROTOCOL_JSON if _codec(codec) == "json" else SUBPROTOCOL_MSGPACK


def _codec(name: str) -> Literal["msgpack", "json"]:
    if name == "msgpack":
        return "msgpack"
    if name == "json":
        return "json"
    typer.echo("relaydesk: --codec is msgpack or json", err=True)
    raise typer.Exit(2)


def _run(coro: Any) -> None:
    try:
        asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except EndpointError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(UNREACHABLE) from None
    except ConnectError as exc:
        hint = ""
        if exc.code == ErrorCode.TOKEN_INVALID:
            hint = " (is --secret the app's secret, or --token signed with it?)"
        typer.echo(f"relaydesk: {exc}{hint}", err=True)
        raise typer.Exit(1) from None
    except RelaydeskError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(1) from None
