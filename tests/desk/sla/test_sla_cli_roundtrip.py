"""Every worked example through ``relaydesk desk sla explain``, wrapped and unwrapped."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from relaydesk.cli.desk import desk_app

ROOT = pathlib.Path(__file__).resolve().parents[3]
CASES = sorted((ROOT / "tests" / "desk" / "sla" / "cases").glob("*.json"))
runner = CliRunner()


def _explain(path: pathlib.Path, *flags: str) -> str:
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(path), *flags])
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_file_round_trip(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    body = json.loads(path.read_text())
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(body["case"]))
    wrapped_json = json.loads(_explain(path, "--json"))
    plain_json = json.loads(_explain(plain, "--json"))
    assert wrapped_json == plain_json
    assert _explain(path) == _explain(plain)
    # the CLI's answer holds the file's expectations
    got: dict[str, Any] = {m["metric"]: m for m in wrapped_json["sla"]["metrics"]}
    for name, fields in body["expect"].get("metrics", {}).items():
        for key, value in fields.items():
            assert got[name][key] == value, f"{name}.{key}"
    # and the explanation's JSON is itself stable through a second encode
    assert json.loads(json.dumps(wrapped_json)) == wrapped_json


def test_readme_explain_line_runs_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^\.venv/bin/relaydesk (desk sla explain --input (\S+\.json))$", readme, re.M)
    assert m is not None, "README lost its `desk sla explain` line"
    assert (ROOT / m.group(2)).is_file()
    r = subprocess.run(
        [sys.executable, "-m", "relaydesk", *m.group(1).split()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "== resolution" in r.stdout


def test_bad_case_file_gives_the_code(tmp_path: pathlib.Path) -> None:
    case = tmp_path / "c.json"
    case.write_text(
        json.dumps(
            {
                "events": [{"at": "0001-01-01T00:00:00Z", "kind": "created", "priority": "P2"}],
                "now": "2024-01-01T00:00:00Z",
            }
        )
    )
    r = runner.invoke(desk_app, ["sla", "explain", "--input", str(case)])
    assert r.exit_code == 1 and "time.out_of_range" in r.output
