"""SLA policy pages of the console: list, one version in words, a new version, re-apply.

Theory of operation
-------------------
Agents only (the API's rule: ``GET/POST /api/desk/sla/policies...``); customers get the
console's 403 page.  Policy versions are immutable, so "editing" means storing the next
version: the editor is a JSON textarea prefilled with the latest version (without ``id`` and
``version``, default-valued target fields left out).  The text is decoded into the API's own
body type (:class:`~relaydesk.web.desk_api.PolicyDraft`) and stored through the same service
call as ``POST /api/desk/sla/policies/{id}/versions``, so the console accepts and refuses
exactly what the API does, with the same stable codes; a refused text is shown again with
the code and message above it and nothing is stored (the service writes one transaction,
after every check).

The ticket page's re-apply control posts here too and calls the API's service call for
``PUT /api/desk/tickets/{id}/sla/policy``, which logs ``sla_policy_applied``.

The view functions at the top are pure (a policy and its calendars in, strings out) and
unit-tested; the handlers only fetch, call the service and render.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect

from relaydesk.desk.sla import Calendar, SlaConfigError, SlaPolicy, Target
from relaydesk.desk.sla.policy import CALENDAR_24X7, METRICS, PRIORITIES
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import Ticket
from relaydesk.storage.desk import from_ms
from relaydesk.storage.engine import Tx
from relaydesk.web.console._forms import Errors
from relaydesk.web.console._sessions import ConsoleSession
from relaydesk.web.console._views import fmt_time
from relaydesk.web.desk_api import PolicyDraft

if TYPE_CHECKING:
    from relaydesk.web.console._routes import Console

#: Longest editor text accepted: the biggest sensible policy (four priorities, three
#: targets each, every field spelt out) is about 3 kB; this leaves room for formatting.
MAX_POLICY_TEXT: Final = 64_000

_METRIC_LABELS: Final = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}
_KIND_LABELS: Final = {
    "duration": "duration",
    "end_of_business_day": "end of business day",
    "end_of_nth_business_day": "end of the n-th business day",
}
#: Target fields left out of the editor's starting text when they hold their default.
_TARGET_DEFAULTS: Final = {
    f.encode_name: f.default
    for f in msgspec.structs.fields(Target)
    if f.default is not msgspec.NODEFAULT
}

#: ``refused(session, ticket_id, fields, errors, status)``: the ticket page again, with
#: inline errors and what was submitted (``_routes.py`` owns the ticket page).
TicketRefusal = Callable[
    [ConsoleSession, int, Mapping[str, str], Errors, int], Awaitable[Response[str]]
]


# -- pure views -----------------------------------------------------------------------------------


def span_text(seconds: float) -> str:
    """``15 min``, ``2 h``, ``4 h 30 min``, ``1 d 2 h``, ``45 s`` (never empty)."""
    s = round(seconds)
    if s <= 0:
        return "0 s"
    d, rest = divmod(s, 86_400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m else ""]
    if sec:
        parts.append(f"{sec} s")
    return " ".join(p for p in parts if p)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _days(n: float) -> str:
    return f"{n:g} business day" + ("" if n == 1 else "s")


def target_value(target: Target) -> str:
    """What a target promises, in words (docs/sla.md section 3)."""
    if target.kind == "duration":
        parts = []
        if target.business_days:
            parts.append(_days(target.business_days))
        if target.seconds:
            parts.append(span_text(target.seconds))
        budget = " + ".join(parts)
        return budget if target.calendar == CALENDAR_24X7 else f"{budget} of open time"
    n = target.nth_day
    if n == 0:
        return "end of the business day it starts"
    if n == 1:
        return "end of the next business day"
    return f"end of the {_ordinal(n)} business day after the starting one"


class TargetRow(msgspec.Struct, frozen=True):
    """One metric of one priority, ready to place in a table row."""

    metric: str
    label: str
    measured: bool
    kind: str
    value: str
    cutoff: str
    minimum: str
    pauses: str
    pauses_own: bool
    calendar: str


class PriorityView(msgspec.Struct, frozen=True):
    """The targets of one priority."""

    priority: str
    rows: list[TargetRow]


class PolicyView(msgspec.Struct, frozen=True):
    """One policy version in words."""

    id: str
    version: int
    name: str
    pause_statuses: str
    reopen_mode: str
    warn_percent: str
    priorities: list[PriorityView]


def _statuses(statuses: tuple[str, ...]) -> str:
    return ", ".join(statuses) if statuses else "none (never paused)"


def calendar_text(name: str, calendars: Mapping[str, Calendar]) -> str:
    """``business (Europe/London)``; ``24x7 (always open)``; unknown names as they are."""
    if name == CALENDAR_24X7:
        return f"{name} (always open)"
    cal = calendars.get(name)
    return name if cal is None else f"{name} ({cal.timezone})"


def policy_view(policy: SlaPolicy, calendars: Mapping[str, Calendar]) -> PolicyView:
    """``policy`` as the version page shows it: per priority, per metric, in words."""
    priorities = []
    for prio in PRIORITIES:
        targets = policy.targets[prio]
        rows = []
        for metric in METRICS:
            t = targets.get(metric)
            pauses = policy.pauses_for(metric)
            own = metric in policy.metric_pause_statuses
            if t is None:
                rows.append(
                    TargetRow(
                        metric=metric,
                        label=_METRIC_LABELS[metric],
                        measured=False,
                        kind="not measured",
                        value="",
                        cutoff="",
                        minimum="",
                        pauses=_statuses(pauses),
                        pauses_own=own,
                        calendar="",
                    )
                )
                continue
            end_of_day = t.kind != "duration"
            rows.append(
                TargetRow(
                    metric=metric,
                    label=_METRIC_LABELS[metric],
                    measured=True,
                    kind=_KIND_LABELS[t.kind],
                    value=target_value(t),
                    cutoff=f"{t.cutoff} local" if t.cutoff else ("none" if end_of_day else "—"),
                    minimum=span_text(t.min_seconds) if t.min_seconds else "—",
                    pauses=_statuses(pauses),
                    pauses_own=own,
                    calendar=calendar_text(t.calendar, calendars),
                )
            )
        priorities.append(PriorityView(priority=prio, rows=rows))
    return PolicyView(
        id=policy.id,
        version=policy.version,
        name=policy.name,
        pause_statuses=_statuses(policy.pause_statuses),
        reopen_mode=(
            "resume (a re-open keeps the time used)"
            if policy.reopen_mode == "resume"
            else "new cycle (a re-open restarts resolution with a full budget)"
        ),
        warn_percent=f"{policy.warn_fraction * 100:g}%",
        priorities=priorities,
    )


def draft_text(policy: SlaPolicy) -> str:
    """The editor's starting text: ``policy`` without ``id``/``version``, targets without
    their default-valued fields, indented; it decodes back to the same policy."""
    body = msgspec.to_builtins(policy)
    del body["id"], body["version"]
    for targets in body["targets"].values():
        for metric, target in list(targets.items()):
            if target is None:
                continue
            targets[metric] = {
                k: v for k, v in target.items() if k == "kind" or _TARGET_DEFAULTS.get(k) != v
            }
    return msgspec.json.format(msgspec.json.encode(body), indent=2).decode()


class PolicyProblem(msgspec.Struct, frozen=True):
    """Why an editor text was refused: a stable code and a message."""

    code: str
    message: str


def parse_policy_text(policy_id: str, text: str) -> tuple[SlaPolicy | None, PolicyProblem | None]:
    """The editor's text as the policy it would store under ``policy_id``, or the problem.

    Decodes into the API's body type, so the codes are the API's: ``request.invalid`` for
    text that is not JSON or not shaped like a policy, ``request.too_long`` for an over-long
    name or text, and the engine's own codes (``policy.bad_target``...) for the rules.
    """
    if not text.strip():
        return None, PolicyProblem(DeskErrorCode.REQUEST_INVALID, "the policy text is empty")
    if len(text) > MAX_POLICY_TEXT:
        return None, PolicyProblem(
            DeskErrorCode.TOO_LONG,
            f"the policy text is {len(text)} characters; at most {MAX_POLICY_TEXT}",
        )
    try:
        draft = msgspec.json.decode(text, type=PolicyDraft)
    except SlaConfigError as exc:
        where = _failing_target(text)
        message = exc.message if where is None else f"{where}: {exc.message}"
        return None, PolicyProblem(exc.code, message)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # The API's rule (desk_api._validation_code): a length bound is request.too_long.
        code = (
            DeskErrorCode.TOO_LONG
            if "length" in message and "<=" in message
            else DeskErrorCode.REQUEST_INVALID
        )
        return None, PolicyProblem(code, message)
    except msgspec.DecodeError as exc:
        return None, PolicyProblem(DeskErrorCode.REQUEST_INVALID, f"not valid JSON: {exc}")
    try:
        return draft.to_policy(policy_id), None
    except SlaConfigError as exc:
        return None, PolicyProblem(exc.code, exc.message)


def _failing_target(text: str) -> str | None:
    """``targets.P1.resolution``: the first target the engine refuses, for the message.

    The engine's checks run while decoding and carry no path; a person editing the JSON
    wants to know which of the twelve targets is meant.
    """
    body = msgspec.json.decode(text)
    targets = body.get("targets") if isinstance(body, dict) else None
    for prio, metrics in (targets or {}).items():
        for metric, target in (metrics or {}).items() if isinstance(metrics, dict) else ():
            try:
                msgspec.convert(target, Target)
            except SlaConfigError:
                return f"targets.{prio}.{metric}"
            except msgspec.ValidationError:
                continue
    return None


class VersionEntry(msgspec.Struct, frozen=True):
    """One stored version in the list."""

    id: str
    version: int
    name: str
    stored_at: str


class PolicyEntry(msgspec.Struct, frozen=True):
    """A policy id with its versions, newest last."""

    id: str
    name: str
    latest: int
    versions: list[VersionEntry]


def group_versions(versions: list[VersionEntry]) -> list[PolicyEntry]:
    """Versions (sorted by id, then version) grouped per policy id."""
    out: list[PolicyEntry] = []
    for v in versions:
        if not out or out[-1].id != v.id:
            out.append(PolicyEntry(id=v.id, name=v.name, latest=v.version, versions=[]))
        out[-1].versions.append(v)
        out[-1] = msgspec.structs.replace(out[-1], name=v.name, latest=v.version)
    return out


def version_value(policy_id: str, version: int) -> str:
    """The re-apply select's option value (ids may hold ``:``; versions are digits)."""
    return f"{version}:{policy_id}"


def parse_version_value(value: str) -> tuple[str, int] | None:
    """``(policy id, version)`` from :func:`version_value`, or ``None``."""
    version, sep, policy_id = value.partition(":")
    if not sep or not policy_id or not _digits(version):
        return None
    return policy_id, int(version)


def _digits(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts "²", which int() refuses.
    return 0 < len(text) <= 7 and text.isascii() and text.isdigit()


# -- handlers -------------------------------------------------------------------------------------


async def _versions(console: Console) -> list[VersionEntry]:
    tickets = console.desk.tickets

    def run(tx: Tx) -> list[VersionEntry]:
        return [
            VersionEntry(
                id=pid,
                version=v,
                name=tickets.documents.policy(tx, pid, v).name,
                stored_at=fmt_time(from_ms(at)),
            )
            for pid, v, at in console.desk.store.policy_versions(tx)
        ]

    return await tickets.read(run)


async def ticket_policy_context(console: Console, ticket: Ticket) -> dict[str, Any]:
    """What the agent's ticket page needs for its policy control: every stored version."""
    versions = await _versions(console)
    return {
        "policy_versions": versions,
        "policy_current": version_value(ticket.policy_id, ticket.policy_version),
        "version_value": version_value,
    }


def policy_handlers(
    console: Console, prefix: str, refused: TicketRefusal
) -> list[HTTPRouteHandler]:
    """The policy pages under ``prefix`` and the ticket page's re-apply action."""
    tickets = console.desk.tickets
    base = prefix + "/sla/policies"

    async def load(policy_id: str, version: int | None) -> SlaPolicy:
        try:
            return await tickets.policy_version(policy_id, version)
        except DeskError as exc:
            if exc.code == DeskErrorCode.UNKNOWN_POLICY:
                raise NotFoundException(detail=exc.message) from exc
            raise

    async def calendars() -> dict[str, Calendar]:
        return await tickets.read(tickets.documents.calendars)

    def editor(
        session: ConsoleSession,
        latest: SlaPolicy,
        text: str,
        based_on: int,
        problem: PolicyProblem | None = None,
        status: int = 200,
    ) -> Response[str]:
        return console.render(
            "policy_edit.html",
            status,
            session,
            latest=latest,
            based_on=based_on,
            text=text,
            problem=problem,
        )

    @get(base, include_in_schema=False)
    async def list_policies(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.agent(request)
        policies = group_versions(await _versions(console))
        return console.render("policies.html", session=session, policies=policies)

    @get(base + "/{policy_id:str}/versions/{version:int}", include_in_schema=False)
    async def version_page(
        request: Request[Any, Any, Any], policy_id: FromPath[str], version: FromPath[int]
    ) -> Response[str]:
        session = await console.agent(request)
        policy = await load(policy_id, version)
        latest = await load(policy_id, None)
        return console.render(
            "policy.html",
            session=session,
            view=policy_view(policy, await calendars()),
            latest=latest.version,
            json_text=msgspec.json.format(msgspec.json.encode(policy), indent=2).decode(),
            done=request.query_params.get("done") == "version",
        )

    @get(base + "/{policy_id:str}/edit", include_in_schema=False)
    async def edit_page(request: Request[Any, Any, Any], policy_id: FromPath[str]) -> Response[str]:
        session = await console.agent(request)
        latest = await load(policy_id, None)
        return editor(session, latest, draft_text(latest), latest.version)

    @post(base + "/{policy_id:str}/versions", include_in_schema=False)
    async def add_version(
        request: Request[Any, Any, Any], policy_id: FromPath[str]
    ) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        latest = await load(policy_id, None)
        text = fields.get("policy", "")
        based = fields.get("based_on", "")
        based_on = int(based) if _digits(based) else None
        policy, problem = parse_policy_text(policy_id, text)
        status = 422
        if policy is not None:
            try:
                stored = await tickets.add_policy_version(
                    session.principal, policy, based_on=based_on
                )
            except DeskError as exc:
                problem = PolicyProblem(exc.code, exc.message)
                status = exc.status
                if exc.code == DeskErrorCode.SLA_VERSION_CONFLICT:
                    based_on = None  # shown the conflict, the agent now edits on the latest
            else:
                return Redirect(
                    f"{base}/{quote(stored.id, safe='')}/versions/{stored.version}?done=version",
                    status_code=303,
                )
        # Any other refusal keeps the version the edit began from, so a version stored
        # meanwhile is still caught on the next try.
        start = latest.version if based_on is None else based_on
        return editor(session, latest, text, start, problem, status)

    @post(prefix + "/tickets/{ticket_id:int}/sla-policy", include_in_schema=False)
    async def reapply(request: Request[Any, Any, Any], ticket_id: FromPath[int]) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        chosen = parse_version_value(fields.get("policy_version", ""))
        if chosen is None:
            errors = {"sla_policy": "Choose a policy version."}
            return await refused(session, ticket_id, fields, errors, 422)
        try:
            await tickets.apply_policy(session.principal, ticket_id, *chosen)
        except DeskError as exc:
            if exc.code == DeskErrorCode.TICKET_NOT_FOUND:
                raise
            errors = {"sla_policy": f"{exc.code}: {exc.message}"}
            return await refused(session, ticket_id, fields, errors, exc.status)
        return Redirect(f"{prefix}/tickets/{ticket_id}?done=policy", status_code=303)

    return [list_policies, version_page, edit_page, add_version, reapply]
