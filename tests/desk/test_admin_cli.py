"""``relaydesk admin`` against a fresh data directory (typer's runner, real SQLite)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from relaydesk.cli.admin import admin_app

runner = CliRunner()


def _admin(data: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(admin_app, ["--data-dir", str(data), *args])
    return result.exit_code, result.stdout, result.stderr


def test_init_is_refused_once_an_admin_exists(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    code, out, _ = _admin(data, "init", "--email", "root@ops.example", "--name", "Root")
    assert code == 0, out
    assert re.search(r"http://127\.0\.0\.1:8420/console/welcome\?token=[\w-]{40,}", out)
    code, out, err = _admin(data, "init", "--email", "other@ops.example")
    assert code == 1 and "admin.already_initialised" in err
    code, out, _ = _admin(data, "people")
    assert [p["id"] for p in json.loads(out)] == ["admin"]


def test_organisation_app_people_keys_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _admin(data, "init", "--email", "root@ops.example")[0] == 0
    assert _admin(data, "plan", "create", "gold", "--name", "Gold")[0] == 0
    assert _admin(data, "org", "create", "acme", "--name", "Acme", "--plan", "gold")[0] == 0
    code, out, _ = _admin(data, "app", "create", "acme-chat", "--org", "acme")
    assert code == 0 and len(out.splitlines()[-1]) >= 32
    code, _, err = _admin(data, "org", "create", "globex", "--name", "G", "--plan", "nope")
    assert code == 1 and "admin.unknown_plan" in err
    assert _admin(data, "org", "create", "globex", "--name", "G", "--plan", "gold")[0] == 0
    code, _, err = _admin(data, "org", "attach", "globex", "acme-chat")
    assert code == 1 and "admin.app_attached_elsewhere" in err
    code, out, _ = _admin(
        data,
        "customer",
        "invite",
        "dana",
        "--org",
        "acme",
        "--name",
        "Dana",
        "--email",
        "dana@acme.example",
    )
    assert code == 0 and "/console/welcome?token=" in out
    code, _, err = _admin(
        data,
        "customer",
        "invite",
        "erin",
        "--org",
        "acme",
        "--name",
        "Erin",
        "--email",
        "DANA@acme.example",
    )
    assert code == 1 and "admin.duplicate_email" in err
    code, out, _ = _admin(
        data, "key", "create", "--name", "ci", "--scope", "customer", "--owner", "dana"
    )
    assert code == 0 and out.splitlines()[-1].startswith("rdk_")
    key_id = out.split()[1]
    assert _admin(data, "key", "revoke", key_id)[0] == 0
    code, _, err = _admin(data, "key", "revoke", key_id)
    assert code == 1 and "admin.key_revoked" in err
    code, _, err = _admin(data, "org", "create", "Bad Id", "--name", "x", "--plan", "gold")
    assert code == 1 and "admin.invalid" in err
    log = json.loads(_admin(data, "audit", "--limit", "100")[1])["entries"]
    assert {e["actor"].split(":")[0] for e in log} == {"cli"}
    assert log[0]["action"] == "key.revoked"


def test_agents_with_skills_and_on_call_shifts(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _admin(data, "init", "--email", "root@ops.example")[0] == 0
    code, _out, err = _admin(
        data,
        "agent",
        "invite",
        "ann",
        "--name",
        "Ann",
        "--email",
        "ann@x.example",
        "--skill",
        "storage",
        "--oncall",
        "sat,sun@22:00-06:00@Europe/London",
    )
    assert code == 0, err
    ann = next(p for p in json.loads(_admin(data, "people")[1]) if p["id"] == "ann")
    assert ann["skills"] == ["storage"]
    assert ann["oncall"] == [
        {"days": ["sat", "sun"], "start": "22:00", "end": "06:00", "timezone": "Europe/London"}
    ]
    code, _, err = _admin(data, "agent", "update", "ann", "--oncall", "funday@09:00-10:00")
    assert code == 1 and "admin.invalid" in err
    code, _, err = _admin(data, "agent", "update", "ann", "--oncall", "mon@9-10")
    assert code == 1 and "admin.invalid" in err


def test_mail_preferences_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert _admin(data, "init", "--email", "root@ops.example")[0] == 0
    code, out, _ = _admin(data, "person", "notifications", "agent", "admin")
    assert code == 0 and json.loads(out)["at_risk"] == "digest"  # the defaults
    code, out, _ = _admin(
        data, "person", "notifications", "agent", "admin", "--reply", "off", "--at-risk", "instant"
    )
    prefs = json.loads(out)
    assert code == 0 and (prefs["reply"], prefs["at_risk"], prefs["escalation"]) == (
        "off",
        "instant",
        "instant",
    )
    assert json.loads(_admin(data, "person", "notifications", "agent", "admin")[1]) == prefs
    code, out, _ = _admin(data, "person", "notifications", "agent", "admin", "--mention", "digest")
    assert code == 0 and json.loads(out) == {**prefs, "mention": "digest"}
    code, _, err = _admin(data, "person", "notifications", "agent", "admin", "--reply", "never")
    assert code == 1 and "admin.invalid" in err
    code, _, err = _admin(data, "person", "notifications", "customer", "nobody")
    assert code == 1 and "admin.unknown_person" in err
