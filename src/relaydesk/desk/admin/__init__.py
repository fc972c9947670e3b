"""Administration of the desk: organisations, people, API keys, apps, links, audit log.

One service (:class:`AdminService`) with three faces: ``/api/admin``
(``web/admin_api.py``), ``relaydesk admin`` (``cli/admin.py``) and the console's
administration pages.  See docs/desk.md "Administration".
"""

from relaydesk.desk.admin.errors import AdminErrorCode
from relaydesk.desk.admin.model import (
    Actor,
    AgentChange,
    AppSecret,
    AppView,
    AttachApp,
    AuditEntry,
    AuditPage,
    Invitation,
    IssuedKey,
    KeyOwner,
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
from relaydesk.desk.admin.service import AdminService, AppSecrets

__all__ = [
    "Actor",
    "AdminErrorCode",
    "AdminService",
    "AgentChange",
    "AppSecret",
    "AppSecrets",
    "AppView",
    "AttachApp",
    "AuditEntry",
    "AuditPage",
    "Invitation",
    "IssuedKey",
    "KeyOwner",
    "KeyView",
    "Link",
    "NewAgent",
    "NewApp",
    "NewCustomer",
    "NewKey",
    "NewOrganisation",
    "NewPlan",
    "OrganisationChange",
    "OrganisationView",
    "PersonView",
    "PlanView",
    "Rotation",
]
