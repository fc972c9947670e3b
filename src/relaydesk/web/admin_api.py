"""The administration REST API under ``/api/admin`` (Litestar; OpenAPI from the structs).

Handlers parse and authorise; :class:`~relaydesk.desk.admin.AdminService` holds the rules
and writes the audit log.  Every caller presents ``Authorization: Bearer <key>`` with a
key of scope ``admin`` whose owner still has the admin role; an agent or customer key
gets 403 ``auth.not_admin``, a revoked key 401 ``auth.revoked_key``.  Errors have the
desk's body ``{"error": {"code", "message"}}`` (docs/desk.md "Administration").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final

from litestar import Request, Response, Router, delete, get, patch, post, put
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from relaydesk.desk.admin import (
    Actor,
    AdminErrorCode,
    AdminService,
    AgentChange,
    AppSecret,
    AppView,
    AttachApp,
    AuditPage,
    Invitation,
    IssuedKey,
    KeyView,
    Link,
    NewAgent,
    NewApp,
    NewCustomer,
    NewKey,
    NewOrganisation,
    NewPlan,
    OrganisationChange,
    OrganisationView,
    PersonView,
    PlanView,
    Rotation,
)
from relaydesk.desk.admin.errors import refuse
from relaydesk.desk.admin.model import PersonKind
from relaydesk.desk.admin.webhooks import DeliveryView, EndpointSecret, EndpointView, NewEndpoint
from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.server.security_schemes import ADMIN_KEY
from relaydesk.web.desk_api import ErrorBody, ErrorResponse

PREFIX: Final = "/api/admin"

_ERROR_DESCRIPTIONS: Final = {
    400: "The body cannot be read: malformed JSON or nested too deeply (`http.400`)",
    401: "No API key, a malformed header, an unknown key (`auth.invalid_key`) or a revoked"
    " one (`auth.revoked_key`)",
    403: "The key is not of scope `admin`, or its owner lost the admin role (`auth.not_admin`)",
    404: "The organisation, plan, policy, person, app, key or endpoint named does not exist",
    409: "The state does not allow it: it exists already, is disabled or revoked, is attached"
    " elsewhere, or is the last administrator (`admin.last_admin`)",
    413: "The body is over `[http] max_body_bytes` (`http.413`)",
    422: "A parameter or field fails validation (`admin.invalid`)",
}


def _errors(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for every handler's errors (unreadable body, key, role, validation)
    and ``statuses`` besides; ``413`` for the handlers that read a body."""
    return {
        status: ResponseSpec(
            ErrorResponse, description=_ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in (400, 401, 403, 422, *statuses)
    }


_BODY: Final = 413


def _error(status: int, code: str, message: str) -> Response[ErrorResponse]:
    return Response(ErrorResponse(error=ErrorBody(code=code, message=message)), status_code=status)


def _desk_error(_r: Request[Any, Any, Any], exc: DeskError) -> Response[ErrorResponse]:
    return _error(exc.status, exc.code, exc.message)


def _validation_error(
    _r: Request[Any, Any, Any], exc: ValidationException
) -> Response[ErrorResponse]:
    details = exc.extra if isinstance(exc.extra, list) else []
    message = str(exc.detail)
    for item in details:
        if isinstance(item, dict) and item.get("message"):
            message = str(item["message"])
            break
    return _error(422, AdminErrorCode.INVALID, message)


def _http_error(_r: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorResponse]:
    return _error(exc.status_code, f"http.{exc.status_code}", str(exc.detail))


def address_of(request: Request[Any, Any, Any]) -> str:
    """The client address for the audit log (the socket peer; see docs/operations.md on
    proxies)."""
    return request.client.host if request.client is not None else "unknown"


def _authenticator(admin: AdminService) -> Callable[..., Any]:
    async def actor(request: Request[Any, Any, Any]) -> Actor:
        header = request.headers.get("authorization")
        if not header:
            raise DeskError(DeskErrorCode.AUTH_MISSING, "send Authorization: Bearer <admin key>")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise DeskError(DeskErrorCode.AUTH_INVALID, "expected Authorization: Bearer <key>")
        owner, revoked = await admin.authenticate_key(key.strip())
        if revoked:
            raise refuse(AdminErrorCode.AUTH_REVOKED, "this API key was revoked")
        if owner is None:
            raise DeskError(DeskErrorCode.AUTH_INVALID, "unknown API key")
        if owner.scope != "admin":
            raise refuse(AdminErrorCode.NOT_ADMIN, "administration needs a key of scope admin")
        return Actor(who=f"agent:{owner.person_id}", address=address_of(request))

    return actor


Limit = Annotated[int, QueryParameter(ge=1, le=500)]
Before = Annotated[int | None, QueryParameter(ge=1, le=2**53)]


def admin_router(admin: AdminService) -> Router:
    """The ``/api/admin`` router over ``admin``."""

    # -- organisations and plans ----------------------------------------------------------

    @get("/organisations", summary="List organisations with their apps", responses=_errors())
    async def list_orgs(actor: NamedDependency[Actor]) -> list[OrganisationView]:
        return await admin.read(admin.organisations)

    @post(
        "/organisations",
        status_code=201,
        summary="Create an organisation",
        responses=_errors(404, 409, _BODY),
    )
    async def create_org(
        actor: NamedDependency[Actor], data: JSONBody[NewOrganisation]
    ) -> OrganisationView:
        return await admin.write(lambda tx: admin.create_organisation(tx, actor, data))

    @get("/organisations/{org_id:str}", summary="One organisation", responses=_errors(404))
    async def get_org(actor: NamedDependency[Actor], org_id: FromPath[str]) -> OrganisationView:
        return await admin.read(lambda tx: admin.organisation(tx, org_id))

    @patch(
        "/organisations/{org_id:str}",
        summary="Rename; change plan or CSM",
        responses=_errors(404, 409, _BODY),
    )
    async def change_org(
        actor: NamedDependency[Actor], org_id: FromPath[str], data: JSONBody[OrganisationChange]
    ) -> OrganisationView:
        return await admin.write(lambda tx: admin.change_organisation(tx, actor, org_id, data))

    @post(
        "/organisations/{org_id:str}/disable",
        status_code=200,
        summary="Disable",
        responses=_errors(404, 409),
    )
    async def disable_org(actor: NamedDependency[Actor], org_id: FromPath[str]) -> OrganisationView:
        return await admin.write(
            lambda tx: admin.set_organisation_disabled(tx, actor, org_id, True)
        )

    @post(
        "/organisations/{org_id:str}/enable",
        status_code=200,
        summary="Enable",
        responses=_errors(404, 409),
    )
    async def enable_org(actor: NamedDependency[Actor], org_id: FromPath[str]) -> OrganisationView:
        return await admin.write(
            lambda tx: admin.set_organisation_disabled(tx, actor, org_id, False)
        )

    @post(
        "/organisations/{org_id:str}/apps",
        status_code=200,
        summary="Attach an app",
        responses=_errors(404, 409, _BODY),
    )
    async def attach(
        actor: NamedDependency[Actor], org_id: FromPath[str], data: JSONBody[AttachApp]
    ) -> OrganisationView:
        return await admin.write(lambda tx: admin.attach_app(tx, actor, org_id, data.app_id))

    @delete(
        "/organisations/{org_id:str}/apps/{app_id:str}",
        status_code=200,
        summary="Detach an app",
        responses=_errors(404, 409),
    )
    async def detach(
        actor: NamedDependency[Actor], org_id: FromPath[str], app_id: FromPath[str]
    ) -> OrganisationView:
        return await admin.write(lambda tx: admin.detach_app(tx, actor, org_id, app_id))

    @get("/plans", summary="List plans", responses=_errors())
    async def list_plans(actor: NamedDependency[Actor]) -> list[PlanView]:
        return await admin.read(admin.plans)

    @put(
        "/plans",
        status_code=200,
        summary="Create or change a plan",
        responses=_errors(404, 409, _BODY),
    )
    async def put_plan(actor: NamedDependency[Actor], data: JSONBody[NewPlan]) -> PlanView:
        return await admin.write(lambda tx: admin.put_plan(tx, actor, data))

    # -- people ---------------------------------------------------------------------------

    @get("/people", summary="List agents and customers", responses=_errors())
    async def list_people(actor: NamedDependency[Actor]) -> list[PersonView]:
        return await admin.read(admin.people)

    @post(
        "/agents",
        status_code=201,
        summary="Invite an agent (returns the invite link)",
        responses=_errors(404, 409, _BODY),
    )
    async def invite_agent(actor: NamedDependency[Actor], data: JSONBody[NewAgent]) -> Invitation:
        return await admin.write(lambda tx: admin.invite_agent(tx, actor, data))

    @patch(
        "/agents/{agent_id:str}",
        summary="Change an agent's name, role, skills, on-call",
        responses=_errors(404, 409, _BODY),
    )
    async def change_agent(
        actor: NamedDependency[Actor], agent_id: FromPath[str], data: JSONBody[AgentChange]
    ) -> PersonView:
        return await admin.write(lambda tx: admin.change_agent(tx, actor, agent_id, data))

    @post(
        "/customers",
        status_code=201,
        summary="Invite a customer (returns the invite link)",
        responses=_errors(404, 409, _BODY),
    )
    async def invite_customer(
        actor: NamedDependency[Actor], data: JSONBody[NewCustomer]
    ) -> Invitation:
        return await admin.write(lambda tx: admin.invite_customer(tx, actor, data))

    @post(
        "/people/{kind:str}/{person_id:str}/disable",
        status_code=200,
        summary="Disable",
        responses=_errors(404, 409),
    )
    async def disable_person(
        actor: NamedDependency[Actor], kind: FromPath[PersonKind], person_id: FromPath[str]
    ) -> PersonView:
        return await admin.write(
            lambda tx: admin.set_person_disabled(tx, actor, kind, person_id, True)
        )

    @post(
        "/people/{kind:str}/{person_id:str}/enable",
        status_code=200,
        summary="Enable",
        responses=_errors(404, 409),
    )
    async def enable_person(
        actor: NamedDependency[Actor], kind: FromPath[PersonKind], person_id: FromPath[str]
    ) -> PersonView:
        return await admin.write(
            lambda tx: admin.set_person_disabled(tx, actor, kind, person_id, False)
        )

    @post(
        "/people/{kind:str}/{person_id:str}/reset-link",
        status_code=201,
        summary="A one-time password-reset (or invite) link",
        responses=_errors(404, 409),
    )
    async def reset_link(
        actor: NamedDependency[Actor], kind: FromPath[PersonKind], person_id: FromPath[str]
    ) -> Link:
        return await admin.write(lambda tx: admin.reset_link(tx, actor, kind, person_id))

    # -- keys -----------------------------------------------------------------------------

    @get("/keys", summary="List API keys (never the keys themselves)", responses=_errors())
    async def list_keys(actor: NamedDependency[Actor]) -> list[KeyView]:
        return await admin.read(admin.keys)

    @post(
        "/keys",
        status_code=201,
        summary="Issue an API key (shown once)",
        responses=_errors(404, 409, _BODY),
    )
    async def issue_key(actor: NamedDependency[Actor], data: JSONBody[NewKey]) -> IssuedKey:
        return await admin.write(lambda tx: admin.issue_key(tx, actor, data))

    @post(
        "/keys/{key_id:str}/revoke",
        status_code=200,
        summary="Revoke an API key",
        responses=_errors(404, 409),
    )
    async def revoke_key(actor: NamedDependency[Actor], key_id: FromPath[str]) -> KeyView:
        return await admin.write(lambda tx: admin.revoke_key(tx, actor, key_id))

    # -- apps -----------------------------------------------------------------------------

    @get("/apps", summary="List messaging apps", responses=_errors())
    async def list_apps(actor: NamedDependency[Actor]) -> list[AppView]:
        return await admin.read(admin.apps)

    @post(
        "/apps",
        status_code=201,
        summary="Create an app (its secret is shown once)",
        responses=_errors(404, 409, _BODY),
    )
    async def create_app(actor: NamedDependency[Actor], data: JSONBody[NewApp]) -> AppSecret:
        return await admin.write(lambda tx: admin.create_app(tx, actor, data))

    @post(
        "/apps/{app_id:str}/disable",
        status_code=200,
        summary="Disable an app",
        responses=_errors(404, 409),
    )
    async def disable_app(actor: NamedDependency[Actor], app_id: FromPath[str]) -> AppView:
        return await admin.write(lambda tx: admin.set_app_disabled(tx, actor, app_id, True))

    @post(
        "/apps/{app_id:str}/enable",
        status_code=200,
        summary="Enable an app",
        responses=_errors(404, 409),
    )
    async def enable_app(actor: NamedDependency[Actor], app_id: FromPath[str]) -> AppView:
        return await admin.write(lambda tx: admin.set_app_disabled(tx, actor, app_id, False))

    @post(
        "/apps/{app_id:str}/rotate",
        status_code=200,
        summary="Rotate an app secret",
        responses=_errors(404, 409, _BODY),
    )
    async def rotate(
        actor: NamedDependency[Actor], app_id: FromPath[str], data: JSONBody[Rotation]
    ) -> AppSecret:
        return await admin.write(lambda tx: admin.rotate_app_secret(tx, actor, app_id, data))

    # -- webhooks -------------------------------------------------------------------------

    @get("/webhooks", summary="List signed-webhook endpoints", responses=_errors())
    async def list_webhooks(actor: NamedDependency[Actor]) -> list[EndpointView]:
        return await admin.read(admin.list_webhooks)

    @post(
        "/webhooks",
        status_code=201,
        summary="Register an endpoint (its secret is shown once)",
        responses=_errors(409, _BODY),
    )
    async def create_webhook(
        actor: NamedDependency[Actor], data: JSONBody[NewEndpoint]
    ) -> EndpointSecret:
        return await admin.write(lambda tx: admin.create_webhook(tx, actor, data))

    @post(
        "/webhooks/{endpoint_id:str}/disable",
        status_code=200,
        summary="Disable an endpoint",
        responses=_errors(404),
    )
    async def disable_webhook(
        actor: NamedDependency[Actor], endpoint_id: FromPath[str]
    ) -> EndpointView:
        return await admin.write(
            lambda tx: admin.set_webhook_disabled(tx, actor, endpoint_id, True)
        )

    @post(
        "/webhooks/{endpoint_id:str}/enable",
        status_code=200,
        summary="Enable an endpoint",
        responses=_errors(404),
    )
    async def enable_webhook(
        actor: NamedDependency[Actor], endpoint_id: FromPath[str]
    ) -> EndpointView:
        return await admin.write(
            lambda tx: admin.set_webhook_disabled(tx, actor, endpoint_id, False)
        )

    @get(
        "/webhooks/deliveries",
        summary="The delivery log with the last answers",
        responses=_errors(),
    )
    async def webhook_deliveries(
        actor: NamedDependency[Actor], endpoint: FromQuery[str | None] = None, limit: Limit = 50
    ) -> list[DeliveryView]:
        return await admin.read(lambda tx: admin.webhook_deliveries(tx, endpoint, limit))

    # -- audit ----------------------------------------------------------------------------

    @get("/audit", summary="The audit log, newest first", responses=_errors())
    async def audit(
        actor: NamedDependency[Actor], limit: Limit = 50, before: Before = None
    ) -> AuditPage:
        return await admin.read(lambda tx: admin.audit_log(tx, limit=limit, before=before))

    return Router(
        path=PREFIX,
        route_handlers=[
            list_orgs,
            create_org,
            get_org,
            change_org,
            disable_org,
            enable_org,
            attach,
            detach,
            list_plans,
            put_plan,
            list_people,
            invite_agent,
            change_agent,
            invite_customer,
            disable_person,
            enable_person,
            reset_link,
            list_keys,
            issue_key,
            revoke_key,
            list_apps,
            create_app,
            disable_app,
            enable_app,
            rotate,
            list_webhooks,
            create_webhook,
            disable_webhook,
            enable_webhook,
            webhook_deliveries,
            audit,
        ],
        dependencies={"actor": Provide(_authenticator(admin))},
        security=[{ADMIN_KEY: []}],
        exception_handlers={
            DeskError: _desk_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
        },
        tags=["admin"],
    )
