"""permessage-deflate on the native path (issue 19 item 2; docs/protocol.md §1).

Negotiated only when the node enables it (``[gateway] permessage_deflate``), on both
subprotocols, without context takeover unless that is enabled too; the SDK offers it
through ``websocket_opener(deflate=True)``.  The node without it (the default) is in
test_wire_path.py (``test_deflate_is_not_negotiated_unless_enabled``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from raw_client import Raw
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.typing import Subprotocol

import relaydesk
from relaydesk.client import Message, websocket_opener
from relaydesk.protocol.codec import client_codec
from relaydesk.protocol.frames import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Hello, Publish


@pytest.fixture(scope="module")
def deflating(make_module_server: Callable[..., Any]) -> Any:
    return make_module_server({"gateway": {"permessage_deflate": True}}, name="deflate")


@pytest.mark.parametrize("subprotocol", [SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON])
async def test_deflate_is_negotiated_on_both_subprotocols_without_context_takeover(
    deflating: Any, subprotocol: str
) -> None:
    offer = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]
    async with connect(
        deflating.ws_url,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        extensions=offer,
        compression=None,
    ) as ws:
        assert ws.response is not None
        accepted = ws.response.headers["Sec-WebSocket-Extensions"]
        assert accepted.startswith("permessage-deflate")
        assert "server_no_context_takeover" in accepted
        assert "client_no_context_takeover" in accepted
        # A login and a 20 KB publish compressed both ways, echoed back by the feed.
        codec = client_codec(subprotocol)
        raw = Raw(ws, subprotocol)
        await raw.send(Hello(token=deflating.token("carol"), device="z1"))
        await raw.expect("welcome")
        body = b"compressible " * 1600
        await raw.send(Publish(id="z1", to="user:carol", body=body))
        await raw.expect("puback")
        events = await raw.events_until(1)
        assert events[-1].body == body
        assert codec.name == subprotocol


async def test_a_client_that_does_not_offer_deflate_gets_none(deflating: Any) -> None:
    offer = [Subprotocol(SUBPROTOCOL_MSGPACK)]
    async with connect(deflating.ws_url, subprotocols=offer, compression=None) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_the_sdk_offers_deflate_when_asked_and_works_over_it(deflating: Any) -> None:
    link = await websocket_opener(deflate=True)(deflating.ws_url, [SUBPROTOCOL_MSGPACK], 5.0)
    assert link.extensions == ["permessage-deflate"]  # type: ignore[attr-defined]
    await link.aclose()
    plain = await websocket_opener()(deflating.ws_url, [SUBPROTOCOL_MSGPACK], 5.0)
    assert plain.extensions == []  # type: ignore[attr-defined]
    await plain.aclose()
    opener = websocket_opener(deflate=True)
    async with (
        relaydesk.connect(
            deflating.ws_url, deflating.token("dave"), device="d1", opener=opener
        ) as dave,
        relaydesk.connect(
            deflating.ws_url, deflating.token("erin"), device="e1", opener=opener, codec="json"
        ) as erin,
    ):
        events = erin.events()
        await dave.send("user:erin", "squeezed " * 500)
        async with asyncio.timeout(10):
            while True:
                event = await anext(events)
                if isinstance(event, Message):
                    break
        assert event.text == "squeezed " * 500
