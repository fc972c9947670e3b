"""Console pages for administrators (``/console/admin/...``) and the one-time link page.

Plain server-rendered forms over :class:`~relaydesk.desk.admin.AdminService`, the same
service as ``/api/admin`` and ``relaydesk admin``: organisations and apps, people, API
keys and the audit log.  Every page re-checks the signed-in agent's ``admin`` role (a
demoted administrator loses the pages with the next request); every form carries the
session's CSRF token.  Secrets (invite links, API keys, app secrets) are shown once, in
the response to the form that created them, never in a URL or a redirect.

``/console/welcome?token=...`` is the page an invite or reset link opens: the person
chooses a password (hashed off the event loop) and is signed in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.response import Redirect

from relaydesk.desk.admin import (
    Actor,
    AgentChange,
    NewAgent,
    NewApp,
    NewCustomer,
    NewKey,
    NewOrganisation,
    NewPlan,
    Rotation,
)
from relaydesk.desk.admin.model import PersonKind
from relaydesk.desk.tickets.errors import DeskError
from relaydesk.storage.engine import Tx

if TYPE_CHECKING:
    from relaydesk.web.console._routes import Console
    from relaydesk.web.console._sessions import ConsoleSession

T = TypeVar("T")
PREFIX: Final = "/console"
ADMIN: Final = PREFIX + "/admin"


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client is not None else "unknown"


def _convert(kind: type[T], fields: Mapping[str, Any]) -> T:
    """A request struct from form fields (empty fields are omitted)."""
    try:
        present = {k: v for k, v in fields.items() if v not in ("", None)}
        return msgspec.convert(present, kind, strict=False)  # form fields are strings
    except msgspec.ValidationError as exc:
        raise DeskError("admin.invalid", str(exc), 422) from exc


def admin_handlers(console: Console, page_error: type[Exception]) -> list[HTTPRouteHandler]:
    """The administration pages and the link page, for ``console_router``."""
    admin = console.desk.admin

    async def admin_session(request: Request[Any, Any, Any]) -> ConsoleSession:
        session = await console.agent(request)
        role = await admin.read(lambda tx: admin.role(tx, "agent", session.principal.id))
        if role != "admin":
            raise page_error(403, "Administrators only", "This page is for administrators.")
        return session

    def actor(request: Request[Any, Any, Any], session: ConsoleSession) -> Actor:
        return Actor(who=f"agent:{session.principal.id}", address=_address(request))

    async def page(
        template: str,
        session: ConsoleSession,
        *,
        status: int = 200,
        error: str = "",
        shown_once: str = "",
        shown_label: str = "",
        done: str = "",
    ) -> Response[str]:
        def load(tx: Tx) -> dict[str, Any]:
            return {
                "orgs": admin.organisations(tx),
                "plans": admin.plans(tx),
                "apps": admin.apps(tx),
                "people": admin.people(tx),
                "keys": admin.keys(tx),
                "audit": admin.audit_log(tx, limit=100),
            }

        data = await admin.read(load)
        return console.render(
            template,
            status,
            session,
            error=error,
            shown_once=shown_once,
            shown_label=shown_label,
            done=done,
            **data,
        )

    def action(
        template: str,
        run: Callable[[Request[Any, Any, Any], ConsoleSession, dict[str, str]], Awaitable[Any]],
    ) -> Callable[[Request[Any, Any, Any]], Awaitable[Response[Any]]]:
        """A form post: run it; show its secret (if any) once, else redirect back."""

        async def handle(request: Request[Any, Any, Any]) -> Response[Any]:
            session = await admin_session(request)
            fields = await console.form(request, session)
            try:
                result = await run(request, session, fields)
            except DeskError as exc:
                return await page(
                    template, session, status=exc.status, error=f"{exc.code}: {exc.message}"
                )
            if isinstance(result, tuple):
                label, secret = result
                return await page(template, session, shown_once=secret, shown_label=label)
            return Redirect(
                f"{ADMIN}/{template.removeprefix('admin_').removesuffix('.html')}?done=1",
                status_code=303,
            )

        return handle

    # -- pages ----------------------------------------------------------------------------

    @get(ADMIN, include_in_schema=False)
    async def admin_home(request: Request[Any, Any, Any]) -> Redirect:
        await admin_session(request)
        return Redirect(ADMIN + "/organisations", status_code=303)

    @get(ADMIN + "/organisations", include_in_schema=False)
    async def orgs_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await admin_session(request)
        return await page(
            "admin_organisations.html", session, done=request.query_params.get("done", "")
        )

    @get(ADMIN + "/people", include_in_schema=False)
    async def people_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await admin_session(request)
        return await page("admin_people.html", session, done=request.query_params.get("done", ""))

    @get(ADMIN + "/keys", include_in_schema=False)
    async def keys_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await admin_session(request)
        return await page("admin_keys.html", session, done=request.query_params.get("done", ""))

    @get(ADMIN + "/audit", include_in_schema=False)
    async def audit_page(request: Request[Any, Any, Any]) -> Response[str]:
        session = await admin_session(request)
        return await page("admin_audit.html", session)

    # -- organisations, plans, apps -------------------------------------------------------

    async def create_org(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        new = _convert(
            NewOrganisation, {k: f.get(k) for k in ("id", "name", "plan_id", "csm_agent_id")}
        )
        return await admin.write(lambda tx: admin.create_organisation(tx, actor(req, s), new))

    async def save_plan(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        new = _convert(
            NewPlan, {k: f.get(k) for k in ("id", "name", "policy_id", "policy_version")}
        )
        return await admin.write(lambda tx: admin.put_plan(tx, actor(req, s), new))

    async def org_action(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        org_id, what, who = f.get("org", ""), f.get("do", ""), actor(req, s)
        if what == "disable" or what == "enable":
            return await admin.write(
                lambda tx: admin.set_organisation_disabled(tx, who, org_id, what == "disable")
            )
        if what == "attach":
            return await admin.write(
                lambda tx: admin.attach_app(tx, who, org_id, f.get("app_id", ""))
            )
        if what == "detach":
            return await admin.write(
                lambda tx: admin.detach_app(tx, who, org_id, f.get("app_id", ""))
            )
        if what == "rename":
            from relaydesk.desk.admin import OrganisationChange

            change = _convert(
                OrganisationChange, {k: f.get(k) for k in ("name", "plan_id", "csm_agent_id")}
            )
            return await admin.write(lambda tx: admin.change_organisation(tx, who, org_id, change))
        raise DeskError("admin.invalid", f"unknown action {what!r}", 422)

    async def create_app(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        new = _convert(NewApp, {k: f.get(k) for k in ("id", "organisation_id")})
        made = await admin.write(lambda tx: admin.create_app(tx, actor(req, s), new))
        return (f"Secret of app {made.app.id}", made.secret)

    async def app_action(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        app_id, what, who = f.get("app", ""), f.get("do", ""), actor(req, s)
        if what in ("disable", "enable"):
            return await admin.write(
                lambda tx: admin.set_app_disabled(tx, who, app_id, what == "disable")
            )
        if what == "rotate":
            rotation = _convert(Rotation, {"overlap_s": int(f.get("overlap_s") or 86_400)})
            made = await admin.write(lambda tx: admin.rotate_app_secret(tx, who, app_id, rotation))
            return (
                f"New secret of app {app_id}"
                f" (the old one works until {made.app.previous_secret_until})",
                made.secret,
            )
        raise DeskError("admin.invalid", f"unknown action {what!r}", 422)

    # -- people ---------------------------------------------------------------------------

    async def invite_agent(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        skills = tuple(x.strip() for x in f.get("skills", "").split(",") if x.strip())
        new = _convert(
            NewAgent,
            {
                "id": f.get("id"),
                "name": f.get("name"),
                "email": f.get("email"),
                "role": f.get("role") or "agent",
                "skills": skills,
            },
        )
        made = await admin.write(lambda tx: admin.invite_agent(tx, actor(req, s), new))
        return (f"Invite link for {made.person.id} (send it to {made.person.email})", made.link.url)

    async def invite_customer(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        new = _convert(
            NewCustomer, {k: f.get(k) for k in ("id", "organisation_id", "name", "email")}
        )
        made = await admin.write(lambda tx: admin.invite_customer(tx, actor(req, s), new))
        return (f"Invite link for {made.person.id} (send it to {made.person.email})", made.link.url)

    async def person_action(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        kind_text, person_id, what, who = (
            f.get("kind", ""),
            f.get("id", ""),
            f.get("do", ""),
            actor(req, s),
        )
        if kind_text not in ("agent", "customer"):
            raise DeskError("admin.invalid", "kind is agent or customer", 422)
        kind: PersonKind = "agent" if kind_text == "agent" else "customer"
        if what in ("disable", "enable"):
            return await admin.write(
                lambda tx: admin.set_person_disabled(tx, who, kind, person_id, what == "disable")
            )
        if what == "reset":
            link = await admin.write(lambda tx: admin.reset_link(tx, who, kind, person_id))
            return (f"One-time {link.purpose} link for {person_id}", link.url)
        if what in ("make-admin", "make-agent"):
            change = AgentChange(role="admin" if what == "make-admin" else "agent")
            return await admin.write(lambda tx: admin.change_agent(tx, who, person_id, change))
        raise DeskError("admin.invalid", f"unknown action {what!r}", 422)

    # -- keys -----------------------------------------------------------------------------

    async def issue_key(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        new = _convert(NewKey, {k: f.get(k) for k in ("name", "scope", "owner_id")})
        issued = await admin.write(lambda tx: admin.issue_key(tx, actor(req, s), new))
        return (
            f"API key {issued.record.id} ({issued.record.scope} of {issued.record.owner_id})",
            issued.key,
        )

    async def revoke_key(req: Any, s: ConsoleSession, f: dict[str, str]) -> Any:
        key_id = f.get("key", "")
        return await admin.write(lambda tx: admin.revoke_key(tx, actor(req, s), key_id))

    posts: list[HTTPRouteHandler] = []
    for path, template, run in (
        ("/organisations", "admin_organisations.html", create_org),
        ("/plans", "admin_organisations.html", save_plan),
        ("/organisations/action", "admin_organisations.html", org_action),
        ("/apps", "admin_organisations.html", create_app),
        ("/apps/action", "admin_organisations.html", app_action),
        ("/people/agents", "admin_people.html", invite_agent),
        ("/people/customers", "admin_people.html", invite_customer),
        ("/people/action", "admin_people.html", person_action),
        ("/keys", "admin_keys.html", issue_key),
        ("/keys/revoke", "admin_keys.html", revoke_key),
    ):
        handler = action(template, run)
        handler.__name__ = "admin_post_" + path.strip("/").replace("/", "_")
        posts.append(post(ADMIN + path, include_in_schema=False, name=handler.__name__)(handler))

    # -- one-time links -------------------------------------------------------------------

    def welcome_page(token: str, person: Any, error: str = "", status: int = 200) -> Response[str]:
        csrf = console.new_signin_token()
        response = console.render(
            "welcome.html", status, None, token=token, person=person, error=error, csrf=csrf
        )
        console.set_signin_cookie(response, csrf)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @get(PREFIX + "/welcome", include_in_schema=False)
    async def welcome(request: Request[Any, Any, Any]) -> Response[str]:
        token = request.query_params.get("token", "")
        try:
            person = await admin.read(lambda tx: admin.check_link(tx, token))
        except DeskError as exc:
            raise page_error(exc.status, "Link not usable", exc.message) from exc
        return welcome_page(token, person)

    @post(PREFIX + "/welcome", include_in_schema=False)
    async def welcome_post(request: Request[Any, Any, Any]) -> Response[Any]:
        fields = await console.form(request, None)
        token = fields.get("token", "")
        password = fields.get("password", "")
        try:
            person = await admin.read(lambda tx: admin.check_link(tx, token))
        except DeskError as exc:
            raise page_error(exc.status, "Link not usable", exc.message) from exc
        if password != fields.get("password2", ""):
            return welcome_page(token, person, "The two passwords differ.", 422)
        try:
            principal = await admin.accept_link(token, password, _address(request))
        except DeskError as exc:
            return welcome_page(token, person, exc.message, exc.status)
        return await console.start_session(principal, PREFIX + "/")

    return [
        admin_home,
        orgs_page,
        people_page,
        keys_page,
        audit_page,
        welcome,
        welcome_post,
        *posts,
    ]
