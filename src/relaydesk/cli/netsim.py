"""``relaydesk netsim``: run the TCP impairment proxy in front of any TCP service.

Customers point their app at the proxy's listen address instead of the real server
and turn latency, jitter, a bandwidth cap, random resets and link cuts on and off at
run time through the control API (see docs/netsim.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from typing import Annotated, Literal

import msgspec
import typer

from relaydesk.netsim import LinkProfile, open_control, open_netsim, parse_bandwidth

Side = Literal["both", "upstream", "downstream"]


def parse_hostport(text: str, *, what: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (loopback) as a ``(host, port)`` pair."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise typer.BadParameter(f"{what} must be HOST:PORT, got {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def netsim(
    upstream: Annotated[
        str, typer.Option(help="HOST:PORT of the real service the proxy forwards to.")
    ],
    listen: Annotated[
        str, typer.Option(help="HOST:PORT your app connects to instead (port 0: any).")
    ] = "127.0.0.1:9000",
    control: Annotated[
        str,
        typer.Option(
            help="HOST:PORT for the HTTP control API (e.g. 127.0.0.1:9001); off unless given."
        ),
    ] = "off",
    latency_ms: Annotated[float, typer.Option(help="Added one-way delay per chunk (ms).")] = 0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform ± spread around the latency (ms).")] = 0,
    bandwidth: Annotated[
        str | None, typer.Option(help="Cap such as 256kbit, 1mbit or 64kB (bytes/s).")
    ] = None,
    reset_probability: Annotated[
        float, typer.Option(help="Chance per chunk of resetting the connection (0..1).")
    ] = 0,
    direction: Annotated[
        str, typer.Option(help="Where the impairment applies: both, upstream or downstream.")
    ] = "both",
    seed: Annotated[
        int | None, typer.Option(help="Seed the jitter/reset random draws (reproducible runs).")
    ] = None,
) -> None:
    """Relay TCP to UPSTREAM with latency, jitter, a bandwidth cap, resets and cuts.

    Direction "upstream" is what your app sends, "downstream" what it receives; a
    latency applied to both directions adds twice its value to every round trip.
    Change everything at run time: GET /state, POST /impair, POST /cut, POST /restore.
    """
    up = parse_hostport(upstream, what="--upstream")
    here = parse_hostport(listen, what="--listen")
    ctl = None if control.lower() == "off" else parse_hostport(control, what="--control")
    if direction not in ("both", "upstream", "downstream"):
        raise typer.BadParameter("--direction is both, upstream or downstream")
    try:
        profile = LinkProfile(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            bandwidth_bps=parse_bandwidth(bandwidth) if bandwidth else None,
            reset_probability=reset_probability,
        )
        # Struct constraints are checked on decode, not on construction: check here.
        profile = msgspec.convert(msgspec.to_builtins(profile), LinkProfile)
    except (ValueError, msgspec.ValidationError) as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None
    plain = LinkProfile()
    up_profile = profile if direction in ("both", "upstream") else plain
    down_profile = profile if direction in ("both", "downstream") else plain

    async def run() -> None:
        proxy = await open_netsim(
            here,
            up,
            upstream_profile=up_profile,
            downstream_profile=down_profile,
            rng=random.Random(seed),
        )
        ctl_server = None
        try:
            if ctl is not None:
                ctl_server = await open_control(proxy, ctl)
            lines = [
                f"netsim {_show(*proxy.listen_address)} -> {_show(*up)}",
                f"  upstream   {msgspec.json.encode(up_profile).decode()}",
                f"  downstream {msgspec.json.encode(down_profile).decode()}",
            ]
            if ctl_server is not None:
                base = f"http://{_show(*ctl_server.address)}"
                lines += [
                    f"  control    {base}/state",
                    f"  e.g.       curl -X POST {base}/impair "
                    '-d \'{"direction":"downstream","latency_ms":200,"jitter_ms":50}\'',
                    f"             curl -X POST {base}/cut ; curl -X POST {base}/restore",
                ]
            else:
                lines.append(
                    "  control    off (--control HOST:PORT to change the link while it runs)"
                )
            typer.echo("\n".join(lines), err=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        finally:
            if ctl_server is not None:
                await ctl_server.aclose()
            await proxy.aclose()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(1) from None
