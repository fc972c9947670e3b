"""Run every rule over a snapshot and rank what they found.

Ranking: confidence (highest first), then layer in the order ``server_defect``,
``server_config``, ``network``, ``client``, ``none`` (a defect outranks an explanation of
equal confidence), then title, so equal inputs always give the same order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from relaydesk.desk.diagnosis.model import (
    LOW_CONFIDENCE,
    ArticleLink,
    Diagnosis,
    Finding,
    Snapshot,
)
from relaydesk.desk.diagnosis.rules import RULES, Rule, at

_LAYER_ORDER = {"server_defect": 0, "server_config": 1, "network": 2, "client": 3, "none": 4}
_LAYER_WORDS = {
    "server_defect": "a server defect",
    "server_config": "a server configuration setting",
    "network": "the network",
    "client": "the client side",
    "none": "expected behaviour",
}


def rank(findings: Sequence[Finding]) -> list[Finding]:
    """Findings best first (deterministic)."""
    return sorted(findings, key=lambda f: (-f.confidence, _LAYER_ORDER.get(f.layer, 9), f.title))


def summarise(snap: Snapshot, findings: Sequence[Finding]) -> str:
    """One paragraph for the customer: the top confident finding, or that none was found."""
    scope = f"{snap.app}" + (f" in {snap.region}" if snap.region else "")
    when = f"{at(snap.from_ms):%Y-%m-%d %H:%M}–{at(snap.to_ms):%H:%M} UTC"
    confident = [f for f in findings if f.confidence >= LOW_CONFIDENCE]
    if not confident:
        return (
            f"We checked the telemetry of {scope} for {when} and found no problem on the "
            "server, the network or the clients. An engineer will look at your report."
        )
    top = confident[0]
    more = f" ({len(confident) - 1} more finding(s) in the details.)" if len(confident) > 1 else ""
    return (
        f"We checked the telemetry of {scope} for {when}. Most likely cause "
        f"({_LAYER_WORDS[top.layer]}, confidence {top.confidence:.0%}): {top.title}. "
        f"Suggested action: {top.action}{more}"
    )


def diagnose(
    snap: Snapshot,
    rules: Sequence[Rule] = RULES,
    *,
    articles: dict[str, ArticleLink] | None = None,
) -> Diagnosis:
    """Run ``rules`` over ``snap``; ``articles`` (slug -> link) resolves article links."""
    started = time.perf_counter()
    findings = rank([f for rule in rules for f in rule(snap)])
    links = articles or {}
    slugs = list(dict.fromkeys(f.article_slug for f in findings))
    return Diagnosis(
        app=snap.app,
        region=snap.region,
        window_start=at(snap.from_ms),
        window_end=at(snap.to_ms),
        symptom=snap.symptom,
        findings=findings,
        summary=summarise(snap, findings),
        low_confidence_threshold=LOW_CONFIDENCE,
        minutes=len(snap.minutes),
        connections=len(snap.connections),
        traces=len(snap.traces),
        articles=[links[s] for s in slugs if s in links],
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )
