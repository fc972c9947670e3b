"""The HTTP APIs against their own OpenAPI document, fuzzed by schemathesis on a real node.

Every operation under ``/api/desk``, ``/api/quality``, ``/api/diagnosis``, ``/api/kb`` and
``/v1`` is driven with valid and invalid inputs (derandomized: the same cases every run,
a fixed number per operation) once per credential that applies to it: a desk agent key, a
customer key, the app secret, the operator key, a user token, or none.  Every response
must be no server error, have a documented status, the documented content type, and a
body that matches the documented schema (error bodies included).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

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
FAMILIES = ("/api/desk", "/api/quality", "/api/diagnosis", "/api/kb", "/v1/")
#: Cases per operation and generation mode: with ~30 operations and up to three
#: credentials each, the whole run takes about a minute on a busy 2-core machine.
#: Its length is bounded by these counts, not asserted: a timed assertion only
#: measures how busy the machine was.
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}


def _desk_keys(log: str) -> dict[str, str]:
    return dict(re.findall(r"desk key\s+(\S+)\s+(rdk_\S+)", log))


def credentials(node: Any, path: str) -> list[str | None]:
    """The Authorization values that open ``path`` (and one role that is refused)."""
    keys = _desk_keys(node.log_path.read_text())
    agent, customer = keys["agent:alice"], keys["customer:dana"]
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


def run_operation(
    node: Any, operation: Any, mode: GenerationMode, seen: Counter[tuple[str, int]]
) -> list[str]:
    """Fuzz one operation; returns one line per distinct failure."""
    failures: dict[str, str] = {}
    auths = credentials(node, operation.path)
    # The demo app is the one the keys open; other app names exercise 403/404.
    path_parameters = {"app": st.sampled_from(["demo", "demo", "other"])}
    strategy = operation.as_strategy(generation_mode=mode)

    # The E2EE key directory's eleven small operations: a quarter of the cases each, so
    # the run stays within its budget (they are also covered by tests/server/test_keys_api.py).
    examples = EXAMPLES[mode] // 4 if "/keys/" in operation.path else EXAMPLES[mode]

    @given(case=strategy, app=path_parameters["app"])
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any, app: str) -> None:
        if case.path_parameters and "app" in case.path_parameters:
            case.path_parameters["app"] = app
        for auth in auths:
            headers = {} if auth is None else {"Authorization": auth}
            response = case.call(base_url=node.http_url, headers=headers, timeout=30)
            family = next(f for f in FAMILIES if operation.path.startswith(f))
            seen[family, response.status_code // 100 * 100] += 1
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
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += run_operation(contract_node, operation, mode, seen)
    assert not failures, "\n\n".join(failures)
    # The credentials work: the family answered successfully, not only with refusals.
    print(sorted(seen.items()))
    assert seen[family, 200] > 0, seen
