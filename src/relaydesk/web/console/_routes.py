"""The web console: server-rendered pages for agents and customers under ``/console``.

Theory of operation
-------------------
Handlers parse, authorise and render; the ticket service holds the rules and
re-checks every permission, so a page can never show or change more than the API
would.  Every page and action first resolves the session (``_sessions.py``):

* no or expired session: pages redirect to ``/console/sign-in?next=<page>``, and a form
  post does the same (the page's draft survives in ``localStorage``);
* a session of the wrong role: 403 page (agents' queue and reports, customers' portal);
* a ticket outside a customer's organisation: the service reports it as not found, and
  the console answers 404 — another organisation's ids are never confirmed;
* every POST must carry the session's CSRF token, else 403.

Templates are Jinja2 with autoescape on for every file; nothing is marked safe.  Pages
use no inline script (the Content-Security-Policy allows scripts from ``/console/static``
only); data for scripts travels in ``data-*`` attributes.

Live updates: pages ask ``POST /console/live-token`` for a short-lived relaydesk token
(desk messaging app, user ``agent.<id>``/``customer.<id>``, grants only for the channels
that page may watch), connect to ``/v1/ws`` with the JSON subprotocol, join the channels
and, on a notice, fetch their own fresh HTML fragment (``?fragment=...``).  No polling.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import MediaType, Request, Response, Router, get, post
from litestar.exceptions import HTTPException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from markupsafe import Markup

from relaydesk.clock import Clock, utc_datetime
from relaydesk.config import Settings
from relaydesk.desk.accounts import HasherBusy, normalise_email
from relaydesk.desk.admin.throttle import Rule, SignInThrottle
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.escalation.routing import on_call
from relaydesk.desk.knowledge.service import KnowledgeService
from relaydesk.desk.live import (
    QUEUE_CHANNEL,
    agents_channel,
    messaging_user,
    organisation_channel,
    ticket_channel,
    war_room_channel,
)
from relaydesk.desk.reports import REPORT_TABLES, SlaReport, report_csv, report_tx
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import (
    ACTIVE_STATUSES,
    PRIORITIES,
    STATUSES,
    URGENT_PRIORITIES,
    Agent,
    Organisation,
    Principal,
    Ticket,
    TicketFilter,
)
from relaydesk.desk.tickets.transitions import can_transition
from relaydesk.protocol.tokens import MAX_PEERS, mint_token
from relaydesk.server.cluster.registry import NodeRegistry
from relaydesk.server.routing.hub import Hub
from relaydesk.storage.engine import Tx
from relaydesk.storage.limits import MAX_ID_PARAM
from relaydesk.telemetry import Telemetry, worst_points
from relaydesk.telemetry.charts import TABLE_HEAD, fmt_minute
from relaydesk.web.console._admin import admin_handlers
from relaydesk.web.console._forms import Errors, parse_comment, parse_new_ticket, parse_properties
from relaydesk.web.console._nodes import node_handlers, node_lines
from relaydesk.web.console._policies import policy_handlers, ticket_policy_context
from relaydesk.web.console._quality import (
    GROUP_LABELS,
    PERCENTILES,
    PRESETS,
    WORST_LABELS,
    WORST_LIMIT,
    local_input,
    parse_quality_form,
    quality_view,
)
from relaydesk.web.console._sessions import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    ConsoleSession,
    SessionStore,
    tokens_match,
)
from relaydesk.web.console._views import event_lines, fmt_duration, fmt_time, sla_clocks
from relaydesk.web.console._workspace import (
    linkify,
    queue_lists,
    queue_query,
    ticket_extras,
    workspace_handlers,
)
from relaydesk.web.desk_api import TicketId
from relaydesk.web.static import PackageFiles

log = logging.getLogger("relaydesk.web.console")

PREFIX: Final = "/console"
_HERE: Final = Path(__file__).parent
#: Live tokens are short: a page asks for a fresh one when it reconnects.
LIVE_TOKEN_TTL_S: Final = 600
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline';"
    " img-src 'self' data:;"
    " connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class _SignIn(Exception):
    """The request needs a session: send the browser to sign-in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class _Page(Exception):
    """An error page (403, 404) rendered as HTML."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def _safe_next(value: str | None) -> str:
    """Only same-site console paths are followed after sign-in (no open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//"):
        return value
    return PREFIX + "/"


def _reject_cross_site(request: Request[Any, Any, Any]) -> None:
    # Fetch metadata: browsers mark cross-site requests; refuse them before anything else.
    if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
        raise _Page(403, "Forbidden", "Cross-site request refused.")


class Console:
    """State shared by the console's handlers: services, sessions, templates."""

    def __init__(
        self,
        desk: DeskComponent,
        hub: Hub,
        settings: Settings,
        clock: Clock,
        *,
        session_ttl_s: float,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.desk = desk
        self.hub = hub
        self.telemetry = telemetry
        self.settings = settings
        self.clock = clock
        self.sessions = SessionStore(desk.admin, clock, ttl_s=session_ttl_s)
        self.throttle = SignInThrottle()
        self.secure_cookies = settings.public_url.startswith("https://")
        self.env = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            fmt_time=fmt_time,
            fmt_duration=fmt_duration,
            PRIORITIES=PRIORITIES,
            STATUSES=STATUSES,
            prefix=PREFIX,
        )
        self.env.filters["linkify"] = linkify

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The injected clock as aware UTC."""
        return utc_datetime(self.clock)

    def render(
        self,
        template: str,
        status: int = 200,
        session: ConsoleSession | None = None,
        **context: Any,
    ) -> Response[str]:
        """Render ``template`` with the session's user and CSRF token in the context."""
        html = self.env.get_template(template).render(session=session, **context)
        return Response(html, status_code=status, media_type=MediaType.HTML)

    async def session(self, request: Request[Any, Any, Any]) -> ConsoleSession:
        """The caller's session, else a redirect to sign-in back to this page."""
        found = await self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if found is None:
            path = request.url.path
            if request.method == "GET" and request.url.query:
                path += "?" + request.url.query
            elif request.method != "GET":
                # After sign-in, go back to the page the form was on, not to its action.
                referer = urlsplit(request.headers.get("referer") or "")
                path = referer.path + (f"?{referer.query}" if referer.query else "")
            raise _SignIn(_safe_next(path))
        return found

    async def agent(self, request: Request[Any, Any, Any]) -> ConsoleSession:
        """A session of an agent (403 for customers)."""
        session = await self.session(request)
        if session.principal.kind != "agent":
            raise _Page(403, "Agents only", "This page is for support agents.")
        return session

    async def customer(self, request: Request[Any, Any, Any]) -> ConsoleSession:
        """A session of a customer (403 for agents)."""
        session = await self.session(request)
        if session.principal.kind != "customer":
            raise _Page(403, "Customers only", "The portal is for customer accounts.")
        return session

    async def form(
        self, request: Request[Any, Any, Any], session: ConsoleSession | None
    ) -> dict[str, str]:
        """The submitted form after the CSRF check (403 when the token is missing or wrong)."""
        _reject_cross_site(request)
        raw = await request.form()
        fields = {k: str(v) for k, v in raw.items() if isinstance(v, str)}
        expected = session.csrf if session is not None else request.cookies.get(SIGNIN_COOKIE)
        if expected is None or not tokens_match(expected, fields.get("csrf")):
            raise _Page(403, "Forbidden", "The form's security token is missing or stale.")
        return fields

    async def display_name(self, principal: Principal) -> str:
        """An agent's or contact's name for the header."""

        def run(tx: Tx) -> str:
            store = self.desk.store
            if principal.kind == "agent":
                agent = store.agent(tx, principal.id)
                return agent.name if agent else principal.id
            contact = store.contact(tx, principal.id)
            return contact.name if contact else principal.id

        return await self.desk.tickets.read(run)

    async def directory(self) -> tuple[list[Agent], list[Organisation]]:
        """Active agents and organisations (filters, assignee select, names)."""

        def run(tx: Tx) -> tuple[list[Agent], list[Organisation]]:
            return self.desk.store.agents(tx), self.desk.store.organisations(tx)

        return await self.desk.tickets.read(run)

    def new_signin_token(self) -> str:
        """A fresh double-submit token for a form shown before there is a session."""
        return secrets.token_urlsafe(32)

    def set_signin_cookie(self, response: Response[Any], token: str) -> None:
        """Set the double-submit cookie matching ``token``."""
        response.set_cookie(
            SIGNIN_COOKIE,
            token,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )

    async def start_session(self, principal: Principal, next_path: str) -> Response[Any]:
        """Sign ``principal`` in: a new session, its cookie, and a redirect to ``next_path``."""
        session = await self.sessions.create(principal, await self.display_name(principal))
        response: Response[Any] = Redirect(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
        )
        response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
        return response

    async def live_secret(self) -> str:
        """The desk messaging app's secret (creating the app on first use)."""
        app = self.settings.desk.messaging_app
        return self.hub.secret_for(app) or await self.hub.ensure_app(app)


# -- pages ---------------------------------------------------------------------------------------


def console_router(
    desk: DeskComponent,
    hub: Hub,
    settings: Settings,
    clock: Clock,
    *,
    session_ttl_s: float | None = None,
    telemetry: Telemetry | None = None,
    registry: NodeRegistry | None = None,
    knowledge: KnowledgeService | None = None,
) -> Router:
    """The console under ``/console`` (and ``/`` redirecting to it).

    Also switches on the desk's live notices and war rooms (``DeskComponent.enable_live``),
    which only the console consumes.  ``telemetry`` feeds the Network quality page
    (in-process queries; without it the page says telemetry is disabled); ``registry``
    adds the node list with Drain / Undrain buttons to it; ``knowledge`` serves the
    article pages under ``/console/kb``.
    """
    console = Console(
        desk,
        hub,
        settings,
        clock,
        session_ttl_s=settings.admin.session_ttl_s if session_ttl_s is None else session_ttl_s,
        telemetry=telemetry,
    )
    desk.enable_live()
    tickets = desk.tickets

    @get("/", include_in_schema=False)
    async def root() -> Redirect:
        return Redirect(PREFIX + "/", status_code=303)

    # Litestar treats "/console" and "/console/" as one path.
    @get(PREFIX, include_in_schema=False)
    async def home(request: Request[Any, Any, Any]) -> Redirect:
        session = await console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return Redirect(PREFIX + "/sign-in", status_code=303)
        target = "/queue" if session.principal.kind == "agent" else "/portal"
        return Redirect(PREFIX + target, status_code=303)

    # -- sign-in ----------------------------------------------------------------------------

    def signin_page(
        next_path: str, email: str = "", error: str = "", status: int = 200
    ) -> Response[str]:
        token = console.new_signin_token()
        response = console.render(
            "sign_in.html", status, csrf=token, next=next_path, email=email, error=error
        )
        console.set_signin_cookie(response, token)
        return response

    @get(PREFIX + "/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request[Any, Any, Any]) -> Response[str]:
        expired = request.query_params.get("expired") == "1"
        return signin_page(
            _safe_next(request.query_params.get("next")),
            error="Your session has ended; sign in again to continue." if expired else "",
        )

    admin_settings = settings.admin
    account_rule = Rule(
        free_failures=admin_settings.signin_free_failures_account,
        max_s=admin_settings.signin_max_backoff_s,
    )
    address_rule = Rule(
        free_failures=admin_settings.signin_free_failures_address,
        max_s=admin_settings.signin_max_backoff_s,
    )

    def too_many(next_path: str, email: str, wait: float) -> Response[str]:
        seconds = max(1, math.ceil(wait))
        response = signin_page(
            next_path, email, f"Too many attempts; try again in {seconds} seconds.", 429
        )
        response.headers["Retry-After"] = str(seconds)
        return response

    @post(PREFIX + "/sign-in", include_in_schema=False)
    async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
        fields = await console.form(request, None)
        email = fields.get("email", "").strip()
        next_path = _safe_next(fields.get("next"))
        password = fields.get("password", "")
        if not email or not password:
            return signin_page(next_path, email, "Enter your e-mail and password.", 422)
        # Refused before any password work while the account or the address is blocked.
        address = request.client.host if request.client is not None else "unknown"
        account_key = "acct:" + normalise_email(email)
        keys = {account_key: account_rule, "addr:" + address: address_rule}
        wait = console.throttle.retry_after(keys, console.clock.monotonic())
        if wait > 0:
            return too_many(next_path, email, wait)
        try:
            principal = await console.desk.accounts.authenticate(email, password)
        except HasherBusy:
            return too_many(next_path, email, 1.0)
        if principal is None:
            console.throttle.failed(keys, console.clock.monotonic())
            return signin_page(next_path, email, "Wrong e-mail or password.", 401)
        console.throttle.succeeded(account_key)
        return await console.start_session(principal, next_path)

    @post(PREFIX + "/sign-out", include_in_schema=False)
    async def sign_out(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            await console.form(request, session)
            await console.sessions.end(session.id)
        response: Response[Any] = Redirect(PREFIX + "/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- agent queue --------------------------------------------------------------------------

    async def queue_context(
        request: Request[Any, Any, Any], session: ConsoleSession
    ) -> dict[str, Any]:
        q = queue_query({k: v for k, v in request.query_params.items() if isinstance(v, str) and v})
        agents, orgs = await console.directory()
        now = console.now()
        skills = sorted({s for a in agents for s in a.skills})
        return {
            **(await queue_lists(console, session, q)),
            "filters": q,
            "agents": agents,
            "agent_names": {a.id: a.name for a in agents},
            "organisations": orgs,
            "skills": skills,
            "on_call": [a for a in agents if on_call(a, now)],
            "now": now,
            "now_ms": int(now.timestamp() * 1000),
            "query": urlencode(q),
            "done": request.query_params.get("done", ""),
            "changed": request.query_params.get("changed", ""),
            "failed": request.query_params.get("failed", ""),
        }

    @get(PREFIX + "/queue", include_in_schema=False)
    async def queue_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.agent(request)
        context = await queue_context(request, session)
        if request.query_params.get("fragment") == "rows":
            return console.render("_queue_rows.html", session=session, **context)
        return console.render("queue.html", session=session, **context)

    # -- ticket page --------------------------------------------------------------------------

    async def ticket_context(session: ConsoleSession, ticket_id: int) -> dict[str, Any]:
        try:
            detail = await tickets.detail(session.principal, ticket_id)
            sla = await tickets.sla_status(session.principal, ticket_id)
        except DeskError as exc:
            if exc.code == DeskErrorCode.TICKET_NOT_FOUND:
                raise _Page(404, "Not found", f"There is no ticket {ticket_id}.") from exc
            raise
        agents, orgs = await console.directory()
        now = console.now()
        t = detail.ticket
        agent_view = session.principal.kind == "agent"
        statuses = [s for s in STATUSES if s == t.status or can_transition(t.status, s)]
        names = {a.id: a.name for a in agents}
        people = {f"agent.{a.id}": a.name for a in agents}
        requester = messaging_user("customer", t.requester_id)
        if requester is not None:
            people[requester] = await console.display_name(
                Principal(kind="customer", id=t.requester_id)
            )
        people["desk-bot"] = "relaydesk"
        extras = await ticket_extras(console, session, t)
        actor_names = {f"agent:{a.id}": a.name for a in agents}
        actor_names[f"customer:{t.requester_id}"] = extras["requester_name"]
        return {
            **extras,
            "t": t,
            "detail": detail,
            "comments": detail.comments,
            "events": event_lines(detail.events, names=actor_names, renumber=not agent_view),
            "clocks": sla_clocks(sla, now),
            "sla": sla,
            "agent_view": agent_view,
            "agents": agents,
            "agent_names": names,
            "org_name": {o.id: o.name for o in orgs}.get(t.organisation_id, t.organisation_id),
            "done": "",
            "statuses": statuses,
            "war_room": war_room_channel(t.id) if t.priority in URGENT_PRIORITIES else None,
            "war_room_open": t.status in ACTIVE_STATUSES,
            "people_json": msgspec.json.encode(people).decode(),
            "now": now,
            **(await ticket_policy_context(console, t) if agent_view else {}),
        }

    def ticket_response(
        session: ConsoleSession,
        context: dict[str, Any],
        *,
        status: int = 200,
        errors: Errors | None = None,
        values: Mapping[str, str] | None = None,
        fragment: bool = False,
    ) -> Response[str]:
        template = "_ticket_live.html" if fragment else "ticket.html"
        return console.render(
            template, status, session, errors=errors or {}, values=values or {}, **context
        )

    @get(PREFIX + "/tickets/{ticket_id:str}", include_in_schema=False)
    async def ticket_page(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[str]:
        session = await console.session(request)
        context = await ticket_context(session, ticket_id)
        fragment = request.query_params.get("fragment")
        context["done"] = request.query_params.get("done", "")
        if fragment == "side":
            return console.render(
                "_ticket_side.html", session=session, errors={}, values={}, **context
            )
        return ticket_response(session, context, fragment=fragment == "live")

    def back_to(ticket_id: int, done: str) -> Redirect:
        return Redirect(f"{PREFIX}/tickets/{ticket_id}?done={done}", status_code=303)

    async def refused(
        session: ConsoleSession,
        ticket_id: int,
        fields: Mapping[str, str],
        errors: Errors,
        status: int,
    ) -> Response[str]:
        context = await ticket_context(session, ticket_id)
        return ticket_response(session, context, status=status, errors=errors, values=fields)

    @post(PREFIX + "/tickets/{ticket_id:str}/comments", include_in_schema=False)
    async def comment(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.session(request)
        fields = await console.form(request, session)
        parsed, errors = parse_comment(fields)
        if parsed is None:
            return await refused(session, ticket_id, fields, errors, 422)
        body, public = parsed
        if not public and session.principal.kind != "agent":
            return await refused(
                session, ticket_id, fields, {"body": "Only agents write internal notes."}, 403
            )
        try:
            await tickets.add_comment(session.principal, ticket_id, body, public=public)
        except DeskError as exc:
            if exc.code == DeskErrorCode.TICKET_NOT_FOUND:
                raise _Page(404, "Not found", f"There is no ticket {ticket_id}.") from exc
            return await refused(session, ticket_id, fields, {"body": exc.message}, exc.status)
        return back_to(ticket_id, "reply" if public else "note")

    @post(PREFIX + "/tickets/{ticket_id:str}/properties", include_in_schema=False)
    async def properties(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        agents, _ = await console.directory()
        change, errors = parse_properties(fields, {a.id for a in agents})
        if change is None:
            return await refused(session, ticket_id, fields, errors, 422)
        who = session.principal
        try:
            current = (await tickets.detail(who, ticket_id)).ticket
            if change.priority is not None and change.priority != current.priority:
                await tickets.change_priority(who, ticket_id, change.priority)
            if change.unassign and current.assignee_id is not None:
                await tickets.assign(who, ticket_id, None)
            elif change.assignee is not None and change.assignee != current.assignee_id:
                await tickets.assign(who, ticket_id, change.assignee)
            if change.status is not None and change.status != current.status:
                await tickets.change_status(who, ticket_id, change.status)
        except DeskError as exc:
            if exc.code == DeskErrorCode.TICKET_NOT_FOUND:
                raise _Page(404, "Not found", f"There is no ticket {ticket_id}.") from exc
            return await refused(
                session, ticket_id, fields, {"properties": exc.message}, exc.status
            )
        return back_to(ticket_id, "properties")

    # -- customer portal ----------------------------------------------------------------------

    @get(PREFIX + "/portal", include_in_schema=False)
    async def portal(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.customer(request)
        rows = await tickets.list_tickets(session.principal, TicketFilter(limit=200))
        template = (
            "_portal_rows.html" if request.query_params.get("fragment") == "rows" else "portal.html"
        )
        return console.render(
            template,
            session=session,
            rows=rows,
            now=console.now(),
            org_channel=organisation_channel(session.principal.organisation_id or "") or "",
        )

    @get(PREFIX + "/portal/new", include_in_schema=False)
    async def new_ticket_form(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.customer(request)
        return console.render("new_ticket.html", session=session, errors={}, values={})

    @post(PREFIX + "/portal/new", include_in_schema=False)
    async def new_ticket(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.customer(request)
        fields = await console.form(request, session)
        new, errors = parse_new_ticket(fields)
        if new is not None:
            try:
                ticket: Ticket = await tickets.create_ticket(session.principal, new)
            except DeskError as exc:
                field = {
                    DeskErrorCode.INVALID_WINDOW: "window_end",
                    DeskErrorCode.UNKNOWN_PRIORITY: "priority",
                    DeskErrorCode.UNKNOWN_APP: "app_id",
                }.get(DeskErrorCode(exc.code), "subject")
                errors = {field: exc.message}
            else:
                return Redirect(f"{PREFIX}/tickets/{ticket.id}?done=new", status_code=303)
        return console.render("new_ticket.html", 422, session, errors=errors, values=fields)

    # -- SLA report ---------------------------------------------------------------------------

    def report_window(request: Request[Any, Any, Any]) -> tuple[date, date, Errors]:
        today = console.now().date()
        default_from = today.replace(day=1) - timedelta(days=62)
        errors: Errors = {}
        values: list[date] = []
        for name, default in (
            ("from", default_from.replace(day=1)),
            ("to", today + timedelta(days=1)),
        ):
            text = request.query_params.get(name) or ""
            try:
                values.append(date.fromisoformat(text) if text else default)
            except ValueError:
                errors[name] = "Use YYYY-MM-DD."
                values.append(default)
        if not errors and values[1] <= values[0]:
            errors["to"] = "The report ends before it starts."
        return values[0], values[1], errors

    async def build_report(lo: date, hi: date) -> SlaReport:
        start = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
        end = datetime(hi.year, hi.month, hi.day, tzinfo=UTC)
        return await tickets.read(lambda tx: report_tx(console.desk.store, tx, start, end))

    @get(PREFIX + "/reports/sla", include_in_schema=False)
    async def report_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.agent(request)
        lo, hi, errors = report_window(request)
        report = None if errors else await build_report(lo, hi)
        csat = None
        if not errors:
            csat = await console.desk.workspace.csat(
                datetime(lo.year, lo.month, lo.day, tzinfo=UTC),
                datetime(hi.year, hi.month, hi.day, tzinfo=UTC),
            )
        return console.render(
            "report.html",
            422 if errors else 200,
            session,
            csat=csat,
            report=report,
            errors=errors,
            start=lo.isoformat(),
            end=hi.isoformat(),
            tables=REPORT_TABLES,
        )

    @get(PREFIX + "/reports/sla.csv", include_in_schema=False)
    async def report_download(request: Request[Any, Any, Any]) -> Response[Any]:
        await console.agent(request)
        lo, hi, errors = report_window(request)
        table = request.query_params.get("table") or "attainment"
        if errors or table not in REPORT_TABLES:
            raise _Page(400, "Bad request", "Check the dates and the table name.")
        report = await build_report(lo, hi)
        return Response(
            report_csv(report, table),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="sla-{table}-{lo.isoformat()}-{hi.isoformat()}.csv"'
                )
            },
        )

    # -- network quality ----------------------------------------------------------------------

    @get(PREFIX + "/quality", include_in_schema=False)
    async def quality_page(request: Request[Any, Any, Any]) -> Response[str]:
        """Per app, region and node: success, stage latency, RTT and loss; worst minutes.

        Reads the telemetry query service in-process (the same ``QualityService`` as
        ``/api/quality``); the agent's session is the authorisation, not an app secret.
        """
        session = await console.agent(request)
        common: dict[str, Any] = {
            "presets": PRESETS,
            "groups": GROUP_LABELS,
            "worst_labels": WORST_LABELS,
            "percentiles": PERCENTILES,
            "local_input": local_input,
            "fmt_minute": fmt_minute,
            "table_head": TABLE_HEAD,
        }
        telemetry = console.telemetry
        if telemetry is None:
            return console.render("quality.html", session=session, disabled=True, **common)
        apps = sorted(console.hub.secrets)
        params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        form, errors = parse_quality_form(params, apps, int(console.clock.time() * 1000))
        view = None
        if not errors:
            service = telemetry.quality
            result = await service.series(form.query)
            if form.worst_step_s == form.step_s:
                worst = worst_points(result, form.by, WORST_LIMIT)
            else:
                worst = await service.worst(form.worst_query, form.by, WORST_LIMIT)
            view = quality_view(form, result, worst)
            for s in view.series:
                # charts.py escapes every text it places; the SVG is embedded as-is.
                s.charts = [Markup(svg) for svg in s.charts]
        if not errors:
            status = 200
        elif set(errors) == {"app"}:
            status = 404 if apps else 200  # an unknown app; or no app yet: nothing to show
        else:
            status = 422
        return console.render(
            "quality.html",
            status,
            session,
            disabled=False,
            recording=telemetry.recorder is not None,
            flush_s=telemetry.settings.flush_interval_s,
            apps=apps,
            form=form,
            errors=errors,
            view=view,
            nodes=(
                await node_lines(
                    registry,
                    console.clock.time(),
                    3 * settings.cluster.node_heartbeat_ms / 1000 + 4,
                )
                if registry is not None
                else None
            ),
            quality_url=str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
            done=request.query_params.get("done", ""),
            changed=request.query_params.get("changed", ""),
            **common,
        )

    # -- live token ---------------------------------------------------------------------------

    @post(PREFIX + "/live-token", include_in_schema=False)
    async def live_token(request: Request[Any, Any, Any]) -> Response[Any]:
        _reject_cross_site(request)
        session = await console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return Response({"error": "signed_out"}, status_code=401)
        if not tokens_match(session.csrf, request.headers.get("x-csrf-token")):
            return Response({"error": "csrf"}, status_code=403)
        principal = session.principal
        user = messaging_user(principal.kind, principal.id)
        if user is None:
            return Response({"error": "no_live_identity"}, status_code=409)
        channels: dict[str, str] = {}
        peers: tuple[str, ...] = ()
        if principal.kind == "agent":
            channels[QUEUE_CHANNEL] = "member"
        elif request.query_params.get("portal") == "1" and principal.organisation_id:
            org = organisation_channel(principal.organisation_id)
            if org is not None:
                channels[org] = "member"
        ticket_param = request.query_params.get("ticket")
        if ticket_param:
            # ASCII digits only (str.isdigit takes '١٢٣'), and an id storage can hold.
            if not (
                ticket_param.isascii()
                and ticket_param.isdigit()
                and len(ticket_param) <= 16  # int() of 4,300+ digits raises
                and 1 <= int(ticket_param) <= MAX_ID_PARAM
            ):
                return Response({"error": "bad_ticket"}, status_code=400)
            try:
                t = (await tickets.detail(principal, int(ticket_param))).ticket
            except DeskError:
                return Response({"error": "not_found"}, status_code=404)
            channels[ticket_channel(t.id)] = "member"
            if principal.kind == "agent":
                # Collision detection: agents announce viewing/typing in an agents-only
                # channel and may ask for each other's presence (never customers').
                channels[agents_channel(t.id)] = "member"
                agents, _ = await console.directory()
                peers = tuple(
                    u
                    for a in agents
                    if a.id != principal.id and (u := messaging_user("agent", a.id)) is not None
                )[:MAX_PEERS]
            if t.priority in URGENT_PRIORITIES:
                channels[war_room_channel(t.id)] = "member"
        app = settings.desk.messaging_app
        token = mint_token(
            app,
            await console.live_secret(),
            user,
            now=console.clock.time(),
            ttl_s=LIVE_TOKEN_TTL_S,
            channels=channels,
            # Confined (docs/protocol.md §2.2): only the channels granted above; no
            # direct messages to, or presence of, anyone but (for an agent on a ticket
            # page) the other agents, whose presence shows who is really still there.
            peers=peers,
        )
        return Response(
            {"token": token, "app": app, "user": user, "channels": sorted(channels)},
            headers={"Cache-Control": "no-store"},
        )

    # -- errors and headers -------------------------------------------------------------------

    def on_sign_in(request: Request[Any, Any, Any], exc: _SignIn) -> Response[Any]:
        expired = "1" if request.cookies.get(SESSION_COOKIE) else "0"
        target = f"{PREFIX}/sign-in?next={quote(exc.next_path, safe='/')}&expired={expired}"
        response: Response[Any] = Redirect(target, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def on_page(request: Request[Any, Any, Any], exc: _Page) -> Response[str]:
        session = console.sessions.peek(request.cookies.get(SESSION_COOKIE))
        return console.render(
            "error.html", exc.status, session, title=exc.title, message=exc.message
        )

    def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[str]:
        return on_page(request, _Page(exc.status_code, "Error", str(exc.detail)))

    def on_desk(request: Request[Any, Any, Any], exc: DeskError) -> Response[str]:
        return on_page(request, _Page(exc.status, "Refused", exc.message))

    async def security_headers(response: Response[Any]) -> Response[Any]:
        response.headers.update(
            {
                # Attachment downloads bring their own (``sandbox``); pages get the console's.
                "Content-Security-Policy": response.headers.get("Content-Security-Policy", _CSP),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                "X-Frame-Options": "DENY",
                "Cache-Control": response.headers.get("Cache-Control", "no-store"),
            }
        )
        return response

    @get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Redirect:
        return Redirect(PREFIX + "/static/favicon.svg", status_code=301)

    static = create_static_files_router(
        path=PREFIX + "/static",
        directories=[_HERE / "static"],
        file_system=PackageFiles(),
        name="console-static",
    )
    return Router(
        path="/",
        route_handlers=[
            root,
            home,
            sign_in_form,
            sign_in,
            sign_out,
            queue_page,
            ticket_page,
            comment,
            properties,
            portal,
            new_ticket_form,
            new_ticket,
            report_page,
            report_download,
            quality_page,
            *policy_handlers(console, PREFIX, refused),
            *(node_handlers(console, registry, PREFIX) if registry is not None else []),
            live_token,
            favicon,
            *workspace_handlers(console, knowledge, _Page),
            *admin_handlers(console, _Page),
            static,
        ],
        exception_handlers={
            _SignIn: on_sign_in,
            _Page: on_page,
            DeskError: on_desk,
            HTTPException: on_http,
        },
        after_request=security_headers,
        include_in_schema=False,
    )


__all__ = ["console_router"]
