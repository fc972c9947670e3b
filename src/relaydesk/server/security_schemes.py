"""The credentials of the node's HTTP APIs, as OpenAPI security schemes.

Every API router names the schemes it accepts (``security=[{NAME: []}]``); the OpenAPI
document (``web/openapi.py``) declares them all.  Kept below both the messaging API
(``server/http.py``) and the desk-family APIs (``web/``) so neither imports the other.
"""

from __future__ import annotations

from typing import Final

from litestar.openapi.spec import SecurityScheme

#: Security scheme names, used by the routers' ``security`` requirements.
APP_SECRET: Final = "appSecret"
USER_TOKEN: Final = "userToken"
OPERATOR_KEY: Final = "operatorKey"
DESK_KEY: Final = "deskKey"
ADMIN_KEY: Final = "adminKey"

SECURITY_SCHEMES: Final[dict[str, SecurityScheme]] = {
    APP_SECRET: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The app's secret (`[[apps]] secret`); opens that app only.",
    ),
    USER_TOKEN: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="JWT",
        description="A user token signed with the app secret (docs/protocol.md §2.2).",
    ),
    OPERATOR_KEY: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The operator key (`[telemetry] operator_key`); reads every app's quality.",
    ),
    DESK_KEY: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="rdk_...",
        description="A desk API key of an agent or a customer contact.",
    ),
    ADMIN_KEY: SecurityScheme(
        type="http",
        scheme="bearer",
        bearer_format="rdk_...",
        description="A desk API key of scope `admin` whose owner still has the admin role.",
    ),
}
