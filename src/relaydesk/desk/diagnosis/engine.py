"""Run every rule over a snapshot, reconcile what they found, and rank it.

Theory of operation
-------------------
Rules are independent and each sees the whole snapshot, so two of them can explain the
same excess in different ways.  The engine reconciles before ranking (``explain``):

* **a node explains its victims**: a network finding about node N (``node_outlier``,
  ``node_victims``) explains client findings about devices whose connections were on N
  (a device that "reconnects in a loop" or acknowledges late through a jittering path
  to N is a victim, not a client bug); those are moved to the rejected hypotheses with
  the reason (an expired-token loop stays: the token is the client's);
* **one finding per setting**: when two rules name the same setting, the more confident
  one stays;
* **a slow consumer is not loss**: a ``server_defect`` about a device that a client
  finding calls a slow reader is rejected (the rules already check the device's ack
  progress; this covers a device whose later acks only show in the aggregates).

Ranking: confidence (highest first), then layer in the order ``server_defect``,
``server_config``, ``network``, ``client``, ``none`` (a defect outranks an explanation of
equal confidence), then title, so equal inputs always give the same order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from relaydesk.desk.diagnosis.model import (
    LOW_CONFIDENCE,
    PUBLIC_CONFIDENCE,
    ArticleLink,
    Diagnosis,
    Finding,
    Rejected,
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


def explain(snap: Snapshot, findings: Sequence[Finding]) -> tuple[list[Finding], list[Rejected]]:
    """Reconcile the rules' findings (see the module docstring): the kept findings and
    the ones explained away, as rejected hypotheses with the reason."""
    bad_nodes = {
        f.node: f
        for f in findings
        if f.layer == "network" and f.node and f.confidence >= 0.5 and f.rule != "client_log"
    }
    on_node: dict[str, set[str]] = {}
    for c in snap.connections:
        on_node.setdefault(c.device, set()).add(c.node)
    slow = {f.device for f in findings if f.rule == "slow_consumer" and f.device}
    kept: list[Finding] = []
    rejected: list[Rejected] = []
    for f in findings:
        victim_rules = ("reconnect_loop", "slow_consumer", "client_log")
        if f.layer in ("client", "network") and f.device and f.rule in victim_rules:
            nodes = on_node.get(f.device, set()) | ({f.node} if f.node else set())
            cause = next((bad_nodes[n] for n in sorted(nodes) if n in bad_nodes), None)
            if cause is not None and "token" not in f.title:
                rejected.append(
                    Rejected(
                        f.rule,
                        f.title,
                        f"explained by the node: {cause.title} (rule {cause.rule}); the "
                        "device is one of its victims",
                        node=cause.node,
                        device=f.device,
                    )
                )
                continue
        if f.layer == "server_defect" and f.device in slow:
            rejected.append(
                Rejected(
                    f.rule,
                    f.title,
                    "the same device is a slow consumer whose acknowledgements progress",
                    device=f.device,
                )
            )
            continue
        kept.append(f)
    by_setting: dict[str, Finding] = {}
    out: list[Finding] = []
    for f in rank(kept):
        if f.setting:
            first = by_setting.get(f.setting)
            if first is not None:
                rejected.append(
                    Rejected(f.rule, f.title, f"the same setting is named by {first.rule}")
                )
                continue
            by_setting[f.setting] = f
        out.append(f)
    return out, rejected


def summarise(snap: Snapshot, findings: Sequence[Finding], *, has_data: bool = True) -> str:
    """One paragraph for the customer: the findings above the public threshold in plain
    words, or what was looked at and which data would decide (docs/diagnosis.md)."""
    scope = f"{snap.app}" + (f" in {snap.region}" if snap.region else "")
    when = f"{at(snap.from_ms):%Y-%m-%d %H:%M}–{at(snap.to_ms):%H:%M} UTC"
    if not has_data:
        return (
            f"We have no telemetry for {scope} for {when}: no connection, message or probe "
            "was recorded, so we cannot locate the problem from the server side. Please "
            "check the app id and the time window, and run `relaydesk doctor --attach` on "
            "an affected device (or `relaydesk desk create --attach-doctor`) so that we "
            "can see what the device sees."
        )
    public = [f for f in findings if f.confidence >= PUBLIC_CONFIDENCE]
    if not public:
        weak = [f for f in findings if f.confidence >= LOW_CONFIDENCE]
        tail = (
            f" We are looking at {len(weak)} weaker lead(s) internally."
            if weak
            else " Server, network and client measurements look normal for this window."
        )
        return (
            f"We checked the telemetry of {scope} for {when} and found no cause we are "
            f"confident about.{tail} To decide, please run `relaydesk doctor --attach "
            "TICKET` on an affected device: its clock, round-trip time, loss and SDK "
            "configuration tell us what the server cannot see."
        )
    parts = [f"We checked the telemetry of {scope} for {when}."]
    for i, f in enumerate(public[:3], 1):
        ev = f.evidence[0] if f.evidence else None
        said = ""
        if ev is not None:
            base = "" if ev.baseline is None else f" (normal: {ev.baseline}{_u(ev.unit)})"
            said = f" Evidence: {ev.metric} {ev.value}{_u(ev.unit)}{base}."
        step = f.customer_step or f.action
        parts.append(
            f"{i}. {_LAYER_WORDS[f.layer].capitalize()} (confidence {f.confidence:.0%}): "
            f"{f.title}.{said} Next step: {step}"
        )
    if len(public) > 3:
        parts.append(f"({len(public) - 3} more finding(s) in the details.)")
    return " ".join(parts[:1]) + "\n" + "\n".join(parts[1:])


def _u(unit: str) -> str:
    return f" {unit}" if unit else ""


def has_data(snap: Snapshot) -> bool:
    """True when the window holds any telemetry of the app (aggregates, connections,
    traces) or a client report: otherwise there is nothing to judge."""
    return bool(snap.minutes or snap.connections or snap.traces or snap.client_reports)


def diagnose(
    snap: Snapshot,
    rules: Sequence[Rule] = RULES,
    *,
    articles: dict[str, ArticleLink] | None = None,
) -> Diagnosis:
    """Run ``rules`` over ``snap``; ``articles`` (slug -> link) resolves article links."""
    started = time.perf_counter()
    raw: list[Finding] = []
    rejected: list[Rejected] = []
    for rule in rules:
        for item in rule(snap):
            if isinstance(item, Finding):
                raw.append(item)
            else:
                rejected.append(item)
    findings, explained = explain(snap, raw)
    data = has_data(snap)
    links = articles or {}
    slugs = list(dict.fromkeys(f.article_slug for f in findings))
    return Diagnosis(
        app=snap.app,
        region=snap.region,
        window_start=at(snap.from_ms),
        window_end=at(snap.to_ms),
        symptom=snap.symptom,
        findings=findings,
        summary=summarise(snap, findings, has_data=data),
        low_confidence_threshold=LOW_CONFIDENCE,
        minutes=len(snap.minutes),
        connections=len(snap.connections),
        traces=len(snap.traces),
        articles=[links[s] for s in slugs if s in links],
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        rejected=[*rejected, *explained],
        public_threshold=PUBLIC_CONFIDENCE,
        has_data=data,
        client_reports=len(snap.client_reports),
    )
