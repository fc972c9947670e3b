"""The doctor's weak-network checks: a proxy in the path, and the HTTP-streaming fallback.

``probe_proxy`` asks the node what it saw of a plain request (``GET /v1/stream/probe``:
the ``Via``/``Forwarded``/``X-Forwarded-For`` headers a proxy adds on the way in) and
looks at the answer's own ``Via`` (added on the way out), plus the proxy variables of
the doctor's environment.  ``probe_fallback`` opens a fallback stream with the token
(docs/protocol.md §9) and waits for ``welcome``: it passes when the session works
over plain HTTP, and tells a stream that opened but stays silent (a proxy buffering
responses) from one that was refused.  The judgements are the pure ``*_verdict``
functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec

from relaydesk.doctor.analysis import Status

PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def http_base(ws_url: str) -> str:
    """``http(s)://host:port`` plus any path prefix before ``/v1/ws``."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path
    if path.endswith("/v1/ws"):
        path = path[: -len("/v1/ws")]
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def proxy_verdict(
    seen_by_node: Mapping[str, str], response_via: str, env: Mapping[str, str]
) -> tuple[Status, str, dict[str, Any]]:
    """Whether a proxy is in the path, from what each end saw (pure)."""
    env_proxies = {k: v for k, v in env.items() if k in PROXY_ENV and v}
    data: dict[str, Any] = {
        "request_headers": dict(seen_by_node),
        "response_via": response_via,
        "environment": sorted(env_proxies),
    }
    clues = [f"{k}: {v}" for k, v in seen_by_node.items()]
    if response_via:
        clues.append(f"answer Via: {response_via}")
    if not clues and not env_proxies:
        return "pass", "no proxy seen between this machine and the node", data
    if not clues:
        names = ", ".join(sorted(env_proxies))
        return "pass", f"proxy variables set ({names}) but no proxy seen on the path", data
    return (
        "warn",
        "a proxy is in the path (" + "; ".join(clues)[:200] + "); "
        "if WebSockets fail through it, clients use the HTTP-streaming fallback",
        data,
    )


def fallback_verdict(
    status: int | None, welcomed_ms: float | None, error: str, timeout_s: float
) -> tuple[Status, str]:
    """The fallback check's verdict from what the stream did (pure)."""
    if welcomed_ms is not None:
        return "pass", f"the HTTP-streaming fallback works (welcome in {welcomed_ms:.0f} ms)"
    if status == 200:
        return (
            "fail",
            f"the stream opened but no frame arrived within {timeout_s:g}s: "
            "a proxy is buffering responses (docs/protocol.md §9.4)",
        )
    if status is not None:
        return "fail", f"the stream was refused with HTTP {status}: {error}"[:240]
    return "fail", f"the stream could not be opened: {error or 'timed out'}"


async def probe_proxy(ws_url: str, timeout_s: float) -> tuple[Status, str, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as http:
        try:
            response = await http.get(http_base(ws_url) + "/v1/stream/probe")
        except httpx.HTTPError as exc:
            return "warn", f"could not ask the node what it sees: {exc}", {}
    via = response.headers.get("via", "")
    seen: dict[str, str] = {}
    if response.status_code == 200:
        with contextlib.suppress(msgspec.DecodeError, AttributeError):
            seen = dict(msgspec.json.decode(response.content).get("proxy_headers") or {})
    return proxy_verdict(seen, via, os.environ)


async def probe_fallback(
    ws_url: str,
    hello: bytes,
    token: str,
    timeout_s: float,
    monotonic: Callable[[], float],
) -> tuple[Status, str, dict[str, Any]]:
    """Open a fallback stream with ``hello`` and wait for ``welcome``; close it again."""
    base = http_base(ws_url) + "/v1/stream"
    status: int | None = None
    welcomed_ms: float | None = None
    error = ""
    sid = ""
    t0 = monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, read=None)) as http:
        try:
            async with asyncio.timeout(timeout_s):
                request = http.build_request("POST", base, content=hello)
                response = await http.send(request, stream=True)
                status = response.status_code
                try:
                    if status != 200:
                        body = await response.aread()
                        with contextlib.suppress(
                            msgspec.DecodeError, AttributeError, TypeError, KeyError
                        ):
                            error = str(msgspec.json.decode(body)["error"]["message"])
                        error = error or body[:120].decode(errors="replace")
                    else:
                        sid = response.headers.get("x-relaydesk-stream", "")
                        async for line in response.aiter_lines():
                            if line.startswith('data: {"t":"welcome"'):
                                welcomed_ms = (monotonic() - t0) * 1000
                                break
                            if line.startswith('data: {"t":"error"'):
                                error = line[6:200]
                                break
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError) as exc:
            error = str(exc)
        if sid:
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(f"{base}/{sid}", headers={"authorization": f"Bearer {token}"})
    verdict, reason = fallback_verdict(status, welcomed_ms, error, timeout_s)
    data: dict[str, Any] = {"http_status": status}
    if welcomed_ms is not None:
        data["welcome_ms"] = round(welcomed_ms, 3)
    return verdict, reason, data
