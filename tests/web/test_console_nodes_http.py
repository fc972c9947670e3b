"""The console's node controls over real HTTP: the registry on the network-quality page,
Drain and Undrain for agents (audited as the agent), refused to customers and forgers."""

from __future__ import annotations

import time
from contextlib import closing

import httpx
from console_kit import ConsoleNode, sign_in

QUALITY = "/console/quality?app=demo&range=1h"


def _row(page: str, node: str) -> str:
    return page.split(f'data-node="{node}"', 1)[1].split("</tr>", 1)[0]


def _wait_state(client: httpx.Client, draining: bool) -> str:
    deadline = time.monotonic() + 10
    while True:
        row = _row(client.get(QUALITY).text, "node-1")
        if ("draining" in row) == draining or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def test_an_agent_drains_and_undrains_a_node_from_the_quality_page(
    console_node: ConsoleNode,
) -> None:
    client, csrf = sign_in(console_node, "alice@desk.example")
    with closing(client):
        page = client.get(QUALITY)
        assert page.status_code == 200, page.text
        assert 'id="drain-node-1"' in _row(page.text, "node-1")
        r = client.post(
            "/console/nodes/node-1/drain",
            data={"csrf": csrf, "reason": "jitter at night", "back": QUALITY},
        )
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/quality?app=demo")
        assert "done=drained" in r.headers["location"]
        row = _wait_state(client, True)
        assert "jitter at night" in row and 'id="undrain-node-1"' in row
        # The HTTP API sees the same registry row.
        audit = client.get("/console/admin/audit").text
        assert "node.drain" in audit and "node:node-1" in audit and "agent:alice" in audit
        r = client.post("/console/nodes/node-1/undrain", data={"csrf": csrf, "back": QUALITY})
        assert r.status_code == 303
        assert 'id="drain-node-1"' in _wait_state(client, False)
        assert "node.undrain" in client.get("/console/admin/audit").text


def test_customers_forged_forms_unknown_nodes_and_foreign_redirects_are_refused(
    console_node: ConsoleNode,
) -> None:
    agent, agent_csrf = sign_in(console_node, "alice@desk.example")
    customer, csrf = sign_in(console_node, "dana@acme.example")
    with closing(customer), closing(agent):
        assert customer.get(QUALITY).status_code in (303, 403)
        r = customer.post("/console/nodes/node-1/drain", data={"csrf": csrf})
        assert r.status_code in (303, 403)
        assert "draining" not in _row(agent.get(QUALITY).text, "node-1")  # nothing changed
        assert agent.post("/console/nodes/node-1/drain", data={"csrf": "forged"}).status_code == 403
        assert "draining" not in _row(agent.get(QUALITY).text, "node-1")
        assert agent.post("/console/nodes/nope/drain", data={"csrf": agent_csrf}).status_code == 404
        r = agent.post(
            "/console/nodes/node-1/undrain",
            data={"csrf": agent_csrf, "back": "https://evil.example/"},
        )
        assert r.status_code == 303 and r.headers["location"].startswith("/console/quality")
