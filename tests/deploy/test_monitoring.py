"""deploy/: the Prometheus rules and config pass promtool (syntax and the rules' own unit
tests), the Grafana dashboard and the rules name only metrics a node really serves, and a
real Prometheus scrapes a running node and answers every dashboard query."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "relaydesk-dashboard.json"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} missing: .ci/system-packages installs Debian's prometheus")
        pytest.skip(f"{name} not installed (Debian package prometheus)")
    return path


def _run(*args: str, cwd: Path = PROM) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_checks_rules_config_and_rule_tests() -> None:
    promtool = _tool("promtool")
    assert "SUCCESS: 6 rules found" in _run(promtool, "check", "rules", "relaydesk-alerts.yml")
    _run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in _run(promtool, "test", "rules", "relaydesk-alerts.test.yml")


def test_dashboard_is_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["fieldConfig"]["defaults"]["unit"] for p in dash["panels"])
    assert all(t["expr"] for p in dash["panels"] for t in p["targets"])


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def _served_names(metrics_text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(relaydesk_\w+)", metrics_text, re.M)}


@pytest.mark.slow
def test_real_prometheus_scrapes_a_node(running_server: Any, tmp_path: Path) -> None:
    binary = _tool("prometheus")
    port = free_port()
    target = running_server.http_url.removeprefix("http://")
    config = (PROM / "prometheus.yml").read_text().replace("127.0.0.1:8420", target)
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(PROM / "relaydesk-alerts.yml", tmp_path)
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:  # until the node's series are in: the target was scraped and is up
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            try:
                r = httpx.get(f"{api}/query", params={"query": 'up{job="relaydesk"}'}, timeout=2)
                result = r.json()["data"]["result"] if r.status_code == 200 else []
                if result and result[0]["value"][1] == "1":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        r = httpx.get(f"{api}/query", params={"query": "relaydesk_active_connections"})
        assert r.json()["data"]["result"], r.text
        # the dashboard and the rules name only metrics the node serves
        served = _served_names(httpx.get(running_server.http_url + "/metrics").text)
        used: set[str] = set()
        for text in [*_dashboard_exprs(), (PROM / "relaydesk-alerts.yml").read_text()]:
            used |= set(re.findall(r"\brelaydesk_\w+", text))
        assert used and used <= served, sorted(used - served)
        for expr in _dashboard_exprs():  # every panel's query is valid PromQL here
            q = expr.replace("$node", ".*").replace("$region", ".*")
            r = httpx.get(f"{api}/query", params={"query": q})
            assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
        rules = httpx.get(f"{api}/rules").json()["data"]["groups"][0]["rules"]
        assert len(rules) == 6 and all(rule["health"] != "err" for rule in rules), rules
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
