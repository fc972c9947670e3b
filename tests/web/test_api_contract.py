"""The HTTP APIs against their own OpenAPI document, fuzzed by schemathesis on a real node.

Every operation under ``/api/desk``, ``/api/admin``, ``/api/quality``, ``/api/diagnosis``,
``/api/kb`` and ``/v1`` is driven with valid and invalid inputs (derandomized: the same
cases every run, a fixed number per operation) once per credential that applies to it: a
desk agent key, a customer key, an admin key, the app secret, the operator key, a user
token, or none.  Every response
must be no server error, have a documented status, the documented content type, and a
body that matches the documented schema (error bodies included).

``/api/admin`` is fuzzed positively too, so its writes really happen: people disabled,
keys revoked, organisations disabled.  Its credentials must survive that, or every later
case would only see 401: the path parameters that name a key, a person or an organisation
are drawn from the node's real ids *minus* the admin key (``admin:alice``), its owner, the
refused agent and customer keys, their owners and the customer's organisation, so a case
can hit real records (200) or unknown ones (404) but never remove its own credentials.
The agent and customer keys must be refused (403) on every case they are sent with.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

OPERATOR_KEY = "operator-key-for-the-contract-test"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FAMILIES = ("/api/desk", "/api/admin", "/api/quality", "/api/diagnosis", "/api/kb", "/v1/")
#: Cases per operation and generation mode: with ~30 operations and up to three
#: credentials each, the whole run takes about a minute on a busy 2-core machine.
#: Its length is bounded by these counts, not asserted: a timed assertion only
#: measures how busy the machine was.
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}
#: /api/admin has ~30 operations: fewer cases each, and the refused keys (agent,
#: customer) sent with every REFUSED_EVERY-th case only, keep its run near a minute.
ADMIN_EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
REFUSED_EVERY = 4
#: What the /api/admin run may never name in a path: the admin credential, the refused
#: credentials, their owners and the customer's organisation (module docstring).
PROTECTED_KEYS = ("demo-admin-alice", "demo-agent-alice", "demo-customer-dana")
PROTECTED_IDS = frozenset({"alice", "dana", "acme"})


def _desk_keys(log: str) -> dict[str, str]:
    return dict(re.findall(r"desk key\s+(\S+)\s+(rdk_\S+)", log))


def credentials(node: Any, path: str) -> list[str | None]:
    """The Authorization values that open ``path`` (and one role that is refused)."""
    keys = _desk_keys(node.log_path.read_text())
    agent, customer = keys["agent:alice"], keys["customer:dana"]
    if path.startswith("/api/admin"):
        return [f"Bearer {keys['admin:alice']}", f"Bearer {agent}", f"Bearer {customer}"]
    if path.startswith("/api/kb"):
        return [None, f"Bearer {customer}", f"Bearer {agent}"]
    if path.startswith(("/api/desk", "/api/diagnosis")):
        return [f"Bearer {agent}", f"Bearer {customer}"]
    if path.startswith("/api/quality"):
        return [f"Bearer {node.secret}", f"Bearer {OPERATOR_KEY}"]
    if "/keys/" in path or path.endswith("/keys/claim"):  # the E2EE key directory
        return [f"Bearer {node.token('alice')}"]  # (the secret: tests/server/test_keys_api.py)
    if path.endswith("/history"):
        return [f"Bearer {node.secret}", f"Bearer {node.token('alice')}"]
    return [f"Bearer {node.secret}"]


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return " / ".join(lines[:2])[:300]


def admin_path_parameters(node: Any) -> dict[str, st.SearchStrategy[str]]:
    """Strategies for /api/admin's path parameters: the node's real ids and unknown ones,
    never a protected one (module docstring)."""
    keys = _desk_keys(node.log_path.read_text())
    admin = {"Authorization": f"Bearer {keys['admin:alice']}"}
    listed = httpx.get(node.http_url + "/api/admin/keys", headers=admin, timeout=30)
    assert listed.status_code == 200, listed.text
    listed_ids = [k["id"] for k in listed.json()]
    assert set(PROTECTED_KEYS) <= set(listed_ids), listed_ids  # the exclusion is real
    key_ids = [k for k in listed_ids if k not in PROTECTED_KEYS]
    assert key_ids, listed_ids
    people = ["bob", "carol", "frank"]
    assert not PROTECTED_IDS & {*people, "globex"}
    return {
        "key_id": st.sampled_from([*key_ids, "no-such-key"]),
        "person_id": st.sampled_from([*people, "nobody"]),
        "agent_id": st.sampled_from(["bob", "carol", "nobody"]),
        "org_id": st.sampled_from(["globex", "globex", "no-such-org"]),
        "app_id": st.sampled_from(["demo", "acme-chat", "globex-iot", "no-such-app"]),
    }


def refused(mode: GenerationMode, response: Any) -> bool:
    """Whether an agent or customer key was refused by /api/admin: 403 ``auth.not_admin``,
    or 400 for a body that cannot be read (checked before any key), or, in negative mode,
    401 ``auth.missing_key`` (schemathesis drops the credential to test its absence)."""
    if response.status_code == 400:
        return True
    code = response.json().get("error", {}).get("code") if response.status_code < 500 else None
    if response.status_code == 403:
        return bool(code == "auth.not_admin")
    return mode is GenerationMode.NEGATIVE and code == "auth.missing_key"


def run_operation(
    node: Any,
    operation: Any,
    mode: GenerationMode,
    seen: Counter[tuple[str, int]],
    path_parameters: dict[str, st.SearchStrategy[str]],
) -> list[str]:
    """Fuzz one operation; returns one line per distinct failure."""
    failures: dict[str, str] = {}
    auths = credentials(node, operation.path)
    admin = operation.path.startswith("/api/admin")
    # Path parameters named in ``path_parameters`` are drawn from it, in both modes (a
    # protected id must never be sent); the demo app is the one the keys open, other app
    # names exercise 403/404.
    overrides = st.fixed_dictionaries(
        {"app": st.sampled_from(["demo", "demo", "other"]), **path_parameters}
    )
    strategy = operation.as_strategy(generation_mode=mode)

    # The E2EE key directory's eleven small operations: a quarter of the cases each, so
    # the run stays within its budget (they are also covered by tests/server/test_keys_api.py).
    examples = EXAMPLES[mode] // 4 if "/keys/" in operation.path else EXAMPLES[mode]
    if admin:
        examples = ADMIN_EXAMPLES[mode]
    calls = Counter[str]()

    @given(case=strategy, drawn=overrides)
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any, drawn: dict[str, str]) -> None:
        for name in case.path_parameters or {}:
            if name in drawn:
                case.path_parameters[name] = drawn[name]
        calls["case"] += 1
        for index, auth in enumerate(auths):
            # /api/admin: the refused keys (all but the first) on every REFUSED_EVERY-th case.
            if admin and index > 0 and calls["case"] % REFUSED_EVERY != 1:
                continue
            headers = {} if auth is None else {"Authorization": auth}
            response = case.call(base_url=node.http_url, headers=headers, timeout=30)
            family = next(f for f in FAMILIES if operation.path.startswith(f))
            seen[family, response.status_code // 100 * 100] += 1
            if admin:
                seen["admin" if index == 0 else "refused", response.status_code] += 1
            if admin and index == 0 and response.status_code in (401, 403):
                # The admin key itself is refused only when a negative case dropped it; an
                # admin-scope key issued for a non-admin owner is a documented 403 of its own.
                code = response.json().get("error", {}).get("code")
                issuing = operation.label == "POST /api/admin/keys" and response.status_code == 403
                if not issuing and (mode is GenerationMode.POSITIVE or code != "auth.missing_key"):
                    key = f"{operation.label} [{mode.value}] admin key: {response.status_code}"
                    failures.setdefault(
                        key, f"{key} {response.text[:200]}\n    {case.as_curl_command(headers)}"
                    )
            if admin and index > 0 and not refused(mode, response):
                key = f"{operation.label} [{mode.value}] non-admin key: {response.status_code}"
                failures.setdefault(
                    key, f"{key} {response.text[:200]}\n    {case.as_curl_command(headers)}"
                )
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:
                found = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
                what = "; ".join(f"{type(e).__name__}: {_first_line(e)}" for e in found)
                key = f"{operation.label} [{mode.value}] {response.status_code}: {what}"
                failures.setdefault(key, f"{key}\n    {case.as_curl_command(headers)}")

    try:
        fuzz()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing in this operation can be invalid
    return list(failures.values())


@pytest.fixture
def contract_node(make_server: Callable[..., Any]) -> Any:
    return make_server(config={"telemetry": {"operator_key": OPERATOR_KEY}})


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_http_apis_match_their_openapi_document(contract_node: Any, family: str) -> None:
    """One family of paths per test, each on its own node, so parallel workers share
    the run; every documented operation of the family is fuzzed with every credential."""
    schema = schemathesis.openapi.from_url(contract_node.http_url + "/api/docs/openapi.json")
    operations = [
        result.ok() for result in schema.get_all_operations() if result.ok().path.startswith(family)
    ]
    assert operations, f"no documented operation under {family}"
    failures: list[str] = []
    seen: Counter[tuple[str, int]] = Counter()
    path_parameters = admin_path_parameters(contract_node) if family == "/api/admin" else {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += run_operation(contract_node, operation, mode, seen, path_parameters)
    assert not failures, "\n\n".join(failures)
    # The credentials work: the family answered successfully, not only with refusals.
    print(sorted(seen.items(), key=str))
    assert seen[family, 200] > 0, seen
    if family == "/api/admin":
        # Writes really happened (created, and changed on real records), the refused keys
        # were tried, and the admin key still opens the API after the whole run.
        assert seen["admin", 201] > 0 and seen["admin", 200] > 0, seen
        assert seen["refused", 403] > 0, seen
        admin_path_parameters(contract_node)  # asserts GET /api/admin/keys answers 200
