"""Console pages and actions of the agent workspace and the customer portal's additions:
queue views and search, bulk actions, saved filters, macros, merge and links,
attachments, customer close/reopen and satisfaction ratings, knowledge-base article pages.

Handlers parse and authorise; :class:`~relaydesk.desk.workspace.WorkspaceService` and the
ticket service hold the rules (and re-check every permission).  Article pages render the
article's Markdown with markdown-it-py (CommonMark, raw HTML off) and pass the result
through nh3 (ammonia's allow-list) before it is marked safe: the only ``Markup`` on these
pages is sanitiser output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, urlencode

import msgspec
import nh3
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Redirect
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from relaydesk.desk.knowledge.service import KnowledgeService
from relaydesk.desk.mail import MailKind, MailPreferences
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import Principal, Ticket
from relaydesk.desk.workspace import Page
from relaydesk.desk.workspace.rules import BADGE_LABELS
from relaydesk.storage.engine import Tx
from relaydesk.storage.workspace import SORTS, VIEW_NAMES, ViewQuery
from relaydesk.web.console._forms import parse_new_ticket
from relaydesk.web.console._sessions import SESSION_COOKIE, ConsoleSession
from relaydesk.web.desk_api import TicketId
from relaydesk.web.workspace_api import AnyId, attachment_response

if TYPE_CHECKING:
    from relaydesk.web.console._routes import Console

PER_PAGE: Final = 25
#: The e-mail kinds a person chooses on the notifications page, with their labels.
MAIL_KIND_LABELS: Final[dict[MailKind, str]] = {
    "reply": "New replies on my tickets",
    "assignment": "A ticket assigned to me",
    "escalation": "Escalations (pages and breaches)",
    "at_risk": "SLA at risk",
    "mention": "@mentions in internal notes",
}
VIEW_LABELS: Final = {
    "all": "All open",
    "mine": "Mine",
    "unassigned": "Unassigned",
    "at_risk": "At risk",
    "breached": "Breached",
    "mentions": "Mentions",
    "closed": "Solved & closed",
}
#: Query keys the queue keeps in links, saved filters and live refreshes.
QUEUE_KEYS: Final = (
    "view",
    "q",
    "priority",
    "status",
    "skill",
    "assignee",
    "organisation",
    "sort",
    "order",
    "page",
)
_KB_LINK: Final = re.compile(r"(/console/kb/[a-z0-9][a-z0-9-]{0,63})")
_MD: Final = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_ALLOWED_TAGS: Final = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "a", "code", "pre", "em",
    "strong", "blockquote", "table", "thead", "tbody", "tr", "th", "td", "hr", "br",
}  # fmt: skip


def linkify(text: str) -> Markup:
    """Comment text escaped, with knowledge-base page paths turned into links."""
    escaped = str(escape(text))
    return Markup(_KB_LINK.sub(r'<a href="\1" class="kb-link">\1</a>', escaped))


def render_markdown(body: str) -> Markup:
    """Article Markdown as sanitised HTML (raw HTML in the source is shown as text)."""
    html = _MD.render(body)
    clean = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}, "th": {"align"}, "td": {"align"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
    )
    return Markup(clean)


def queue_query(params: Mapping[str, str]) -> dict[str, str]:
    """The queue's own parameters, non-empty, in a stable order."""
    return {k: params[k] for k in QUEUE_KEYS if params.get(k)}


def view_query(q: Mapping[str, str], page: int) -> ViewQuery:
    """The list a queue query asks for (unknown view or sort fall back to defaults)."""
    view = q.get("view", "all")
    sort = q.get("sort", "due")
    return ViewQuery(
        view=view if view in VIEW_NAMES else "all",
        organisation_id=q.get("organisation"),
        status=q.get("status"),
        priority=q.get("priority"),
        assignee_id=q.get("assignee"),
        skill=q.get("skill"),
        sort=sort if sort in SORTS else "due",
        descending=q.get("order") == "desc",
        limit=PER_PAGE,
        offset=(page - 1) * PER_PAGE,
    )


def page_number(text: str | None) -> int:
    """A 1-based page number from the query (bad input: page 1)."""
    if text and text.isascii() and text.isdigit() and len(text) <= 5:
        return max(1, int(text))
    return 1


async def names(console: Console, tickets: Sequence[Ticket]) -> dict[str, str]:
    """Readable names of the requesters and organisations of ``tickets``."""
    store = console.desk.store

    def run(tx: Tx) -> dict[str, str]:
        out: dict[str, str] = {}
        for t in tickets:
            if f"c:{t.requester_id}" not in out:
                c = store.contact(tx, t.requester_id)
                out[f"c:{t.requester_id}"] = c.name if c else t.requester_id
            if f"o:{t.organisation_id}" not in out:
                o = store.organisation(tx, t.organisation_id)
                out[f"o:{t.organisation_id}"] = o.name if o else t.organisation_id
        return out

    return await console.desk.tickets.read(run)


async def queue_lists(
    console: Console, session: ConsoleSession, q: Mapping[str, str]
) -> dict[str, Any]:
    """What the queue page shows: a search or a view page, counts, saved filters, macros."""
    ws = console.desk.workspace
    who = session.principal
    page = page_number(q.get("page"))
    error = ""
    result: Page
    try:
        if q.get("q"):
            result = await ws.search(who, q["q"], limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
        else:
            result = await ws.view(who, view_query(q, page))
    except DeskError as exc:
        error = exc.message
        result = Page(rows=[], total=0, offset=0, limit=PER_PAGE)
    shown = queue_query(q)
    pages = max(1, (result.total + PER_PAGE - 1) // PER_PAGE)

    def link(**changes: str | None) -> str:
        merged = {**shown, **{k: v for k, v in changes.items() if v is not None}}
        for k, v in changes.items():
            if v == "":
                merged.pop(k, None)
        return "?" + urlencode({k: v for k, v in merged.items() if v})

    def sort_link(key: str) -> str:
        current = shown.get("sort", "due")
        order = "desc" if current == key and shown.get("order") != "desc" else ""
        return link(sort=key, order=order, page="")

    return {
        "rows": result.rows,
        "total": result.total,
        "page": page,
        "pages": pages,
        "counts": await ws.counts(who),
        "saved_views": await ws.saved_views(who),
        "macros": await ws.macros(who),
        "view": q.get("view", "all") if not q.get("q") else "",
        "view_labels": VIEW_LABELS,
        "badge_labels": BADGE_LABELS,
        "names": await names(console, [r.ticket for r in result.rows]),
        "searching": bool(q.get("q")),
        "list_error": error,
        "link": link,
        "sort_link": sort_link,
        "query_string": urlencode(shown),
    }


async def ticket_extras(console: Console, session: ConsoleSession, t: Ticket) -> dict[str, Any]:
    """The ticket page's workspace parts: attachments, links, macros, rating, names."""
    ws = console.desk.workspace
    who = session.principal
    people = await names(console, [t])
    return {
        "attachments": await ws.attachments(who, t.id),
        "links": await ws.links(who, t.id),
        "macros": await ws.macros(who) if who.kind == "agent" else [],
        "rating": await ws.rating(who, t.id),
        "requester_name": people[f"c:{t.requester_id}"],
        "org_display": people[f"o:{t.organisation_id}"],
        "collision_channel": f"desk-ta-{t.id}" if who.kind == "agent" else None,
        "max_attachment_bytes": ws.max_attachment_bytes,
    }


def workspace_handlers(
    console: Console,
    knowledge: KnowledgeService | None,
    page_error: Callable[[int, str, str], Exception],
) -> list[HTTPRouteHandler]:
    """The console routes of the workspace, portal additions and article pages."""
    prefix = "/console"
    ws = console.desk.workspace
    tickets = console.desk.tickets

    def not_found(ticket_id: int) -> Exception:
        return page_error(404, "Not found", f"There is no ticket {ticket_id}.")

    def back(ticket_id: int, done: str, **extra: str) -> Redirect:
        q = urlencode({"done": done, **extra})
        return Redirect(f"{prefix}/tickets/{ticket_id}?{q}", status_code=303)

    def refused(ticket_id: int, exc: DeskError) -> Exception:
        if exc.code in (DeskErrorCode.TICKET_NOT_FOUND, "attachment.not_found"):
            return not_found(ticket_id)
        return page_error(exc.status, "Refused", exc.message)

    def ticket_id_field(fields: Mapping[str, str], name: str) -> int:
        text = fields.get(name, "").strip().lstrip("#")
        if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 15):
            raise page_error(422, "Check the form", f"{name}: give a ticket number")
        return int(text)

    # -- queue: bulk actions and saved filters ------------------------------------------------

    @post(prefix + "/bulk", include_in_schema=False)
    async def bulk(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        raw = await request.form()
        ids = [
            int(v) for v in raw.getall("ids") if isinstance(v, str) and v.isdigit() and len(v) <= 15
        ]
        back_to = fields.get("back", "")
        if not back_to.startswith("?"):
            back_to = "?"
        if not ids:
            raise page_error(422, "Nothing selected", "Tick the tickets to change first.")
        action = fields.get("action", "")
        kw: dict[str, Any] = {}
        name, _, value = action.partition(":")
        if name == "status":
            kw["status"] = value
        elif name == "priority":
            kw["priority"] = value
        elif name == "assign" and value == "-":
            kw["unassign"] = True
        elif name == "assign":
            kw["assignee_id"] = value
        elif name == "macro" and value.isdigit():
            kw["macro_id"] = int(value)
        else:
            raise page_error(422, "Check the form", "Choose an action.")
        try:
            results = await ws.bulk(session.principal, ids, **kw)
        except DeskError as exc:
            raise page_error(exc.status, "Refused", exc.message) from exc
        ok = sum(1 for r in results if r.ok)
        q = dict(parse_qsl(back_to[1:]))
        q.update({"done": "bulk", "changed": str(ok), "failed": str(len(results) - ok)})
        return Redirect(f"{prefix}/queue?{urlencode(q)}", status_code=303)

    @post(prefix + "/views", include_in_schema=False)
    async def save_view(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        query = urlencode(queue_query(dict(parse_qsl(fields.get("query", "")))))
        try:
            await ws.save_view(session.principal, fields.get("name", ""), query)
        except DeskError as exc:
            raise page_error(422, "Check the form", exc.message) from exc
        return Redirect(f"{prefix}/queue?{query}", status_code=303)

    @post(prefix + "/views/{view_id:str}/delete", include_in_schema=False)
    async def delete_view(request: Request[Any, Any, Any], view_id: AnyId) -> Response[Any]:
        session = await console.agent(request)
        await console.form(request, session)
        try:
            await ws.delete_view(session.principal, view_id)
        except DeskError as exc:
            raise page_error(404, "Not found", exc.message) from exc
        return Redirect(f"{prefix}/queue", status_code=303)

    # -- ticket actions -----------------------------------------------------------------------

    @post(prefix + "/tickets/{ticket_id:str}/macro", include_in_schema=False)
    async def apply_macro(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        macro = fields.get("macro_id", "")
        if not (macro.isascii() and macro.isdigit() and len(macro) <= 15):
            raise page_error(422, "Check the form", "Choose a macro.")
        try:
            await ws.apply_macro(session.principal, ticket_id, int(macro))
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(ticket_id, "macro")

    @post(prefix + "/tickets/{ticket_id:str}/merge", include_in_schema=False)
    async def merge(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        into = ticket_id_field(fields, "into")
        try:
            await ws.merge(session.principal, ticket_id, into)
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(into, "merged", source=str(ticket_id))

    @post(prefix + "/tickets/{ticket_id:str}/links", include_in_schema=False)
    async def link(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        other = ticket_id_field(fields, "other")
        try:
            await ws.link(session.principal, ticket_id, other)
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(ticket_id, "linked")

    @post(
        prefix + "/tickets/{ticket_id:str}/attachments",
        include_in_schema=False,
        request_max_body_size=ws.max_attachment_bytes + 64 * 1024,
    )
    async def upload(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.session(request)
        fields = await console.form(request, session)
        raw = await request.form()
        upload = raw.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise page_error(422, "Check the form", "Choose a file to attach.")
        data = await upload.read(ws.max_attachment_bytes + 1)
        public = session.principal.kind == "customer" or fields.get("internal") != "1"
        try:
            await ws.attach(session.principal, ticket_id, upload.filename, data, public=public)
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(ticket_id, "attached")

    @get(prefix + "/attachments/{attachment_id:str}", include_in_schema=False)
    async def download(request: Request[Any, Any, Any], attachment_id: AnyId) -> Response[Any]:
        session = await console.session(request)
        try:
            meta, path = await ws.attachment(session.principal, attachment_id)
        except DeskError as exc:
            raise page_error(404, "Not found", exc.message) from exc
        return attachment_response(meta, path)

    @post(prefix + "/tickets/{ticket_id:str}/customer-status", include_in_schema=False)
    async def customer_status(
        request: Request[Any, Any, Any], ticket_id: TicketId
    ) -> Response[Any]:
        session = await console.customer(request)
        fields = await console.form(request, session)
        action: Literal["solve", "reopen"]
        if fields.get("action") == "solve":
            action = "solve"
        elif fields.get("action") == "reopen":
            action = "reopen"
        else:
            raise page_error(422, "Check the form", "Choose solve or reopen.")
        try:
            await tickets.customer_status(session.principal, ticket_id, action)
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(ticket_id, "solved" if action == "solve" else "reopened")

    @post(prefix + "/tickets/{ticket_id:str}/rating", include_in_schema=False)
    async def rate(request: Request[Any, Any, Any], ticket_id: TicketId) -> Response[Any]:
        session = await console.customer(request)
        fields = await console.form(request, session)
        try:
            await ws.rate(
                session.principal, ticket_id, fields.get("rating", ""), fields.get("comment", "")
            )
        except DeskError as exc:
            raise refused(ticket_id, exc) from exc
        return back(ticket_id, "rated")

    @get(prefix + "/tickets/new-for-customer", include_in_schema=False)
    async def on_behalf_form(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.agent(request)
        return console.render(
            "on_behalf.html", session=session, contacts=await contacts(), errors={}, values={}
        )

    async def contacts() -> list[tuple[str, str]]:
        def run(tx: Tx) -> list[tuple[str, str]]:
            rows = ws.store.contact_choices(tx)
            return [(cid, f"{name} ({org})") for cid, name, org in rows]

        return await tickets.read(run)

    @post(prefix + "/tickets/new-for-customer", include_in_schema=False)
    async def on_behalf(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.agent(request)
        fields = await console.form(request, session)
        new, errors = parse_new_ticket(fields)
        requester = fields.get("requester_id", "")
        if not requester:
            errors["requester_id"] = "Choose the customer you file for."
        if new is not None and not errors:
            try:
                t = await tickets.create_ticket(
                    session.principal, msgspec.structs.replace(new, requester_id=requester)
                )
            except DeskError as exc:
                errors = {"subject": exc.message}
            else:
                return Redirect(f"{prefix}/tickets/{t.id}?done=new", status_code=303)
        return console.render(
            "on_behalf.html", 422, session, contacts=await contacts(), errors=errors, values=fields
        )

    # -- my e-mail notifications --------------------------------------------------------------

    prefs = console.desk.preferences

    @get(prefix + "/notifications", include_in_schema=False)
    async def notifications_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await console.session(request)
        who = session.principal
        return console.render(
            "notifications.html",
            session=session,
            prefs=msgspec.to_builtins(await prefs.get(who.kind, who.id)),
            kinds=MAIL_KIND_LABELS,
            done=request.query_params.get("done", ""),
        )

    @post(prefix + "/notifications", include_in_schema=False)
    async def save_notifications(request: Request[Any, Any, Any]) -> Response[Any]:
        session = await console.session(request)
        fields = await console.form(request, session)
        chosen = {k: fields[k] for k in MAIL_KIND_LABELS if k in fields}
        try:
            new = msgspec.convert(chosen, MailPreferences)
        except msgspec.ValidationError as exc:
            raise page_error(422, "Check the form", str(exc)) from exc
        await prefs.put(session.principal.kind, session.principal.id, new)
        return Redirect(f"{prefix}/notifications?done=saved", status_code=303)

    # -- knowledge base -----------------------------------------------------------------------

    async def viewer(
        request: Request[Any, Any, Any],
    ) -> tuple[ConsoleSession | None, Principal | None]:
        session = await console.sessions.get(request.cookies.get(SESSION_COOKIE))
        return session, (session.principal if session else None)

    @get(prefix + "/kb", include_in_schema=False)
    async def kb_index(request: Request[Any, Any, Any]) -> Response[str]:
        session, who = await viewer(request)
        if knowledge is None:
            raise page_error(404, "Not found", "The knowledge base is not mounted.")
        text = request.query_params.get("q", "")[:200]
        hits = (await knowledge.search(text, who, limit=20)).hits if text.strip() else []
        return console.render(
            "kb_index.html",
            session=session,
            articles=await knowledge.articles(who),
            hits=hits,
            q=text,
            markup=Markup,
        )

    @get(prefix + "/kb/{slug:str}", include_in_schema=False)
    async def kb_article(request: Request[Any, Any, Any], slug: FromPath[str]) -> Response[str]:
        session, who = await viewer(request)
        if knowledge is None or len(slug) > 64:
            raise page_error(404, "Not found", "No such article.")
        article = await knowledge.article(slug, who)
        if article is None:
            raise page_error(404, "Not found", f"There is no article {slug!r}.")
        return console.render(
            "kb_article.html",
            session=session,
            a=article,
            html=render_markdown(article.body),
            done=request.query_params.get("done", ""),
            csrf_value=session.csrf if session else "",
        )

    @post(prefix + "/kb/{slug:str}/feedback", include_in_schema=False)
    async def kb_feedback(request: Request[Any, Any, Any], slug: FromPath[str]) -> Response[Any]:
        session, who = await viewer(request)
        if session is None:
            # Anonymous readers answer too; fetch metadata stands in for the CSRF token
            # (a browser marks a cross-site form post, which is refused).
            if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
                raise page_error(403, "Forbidden", "Cross-site request refused.")
            raw = await request.form()
            fields = {k: str(v) for k, v in raw.items() if isinstance(v, str)}
        else:
            fields = await console.form(request, session)
        if knowledge is None or await knowledge.article(slug, who) is None:
            raise page_error(404, "Not found", "No such article.")
        await ws.kb_feedback(slug, fields.get("helpful") == "yes")
        return Redirect(f"{prefix}/kb/{slug}?done=feedback", status_code=303)

    return [
        bulk,
        save_view,
        delete_view,
        apply_macro,
        merge,
        link,
        upload,
        download,
        customer_status,
        rate,
        on_behalf_form,
        on_behalf,
        kb_index,
        kb_article,
        kb_feedback,
        notifications_page,
        save_notifications,
    ]
