"""Access to the API and the pages (SPEC §10): workspace tokens with scopes, as FastAPI dependencies.

A route declares what it needs with one parameter; the dependency verifies the token, checks that it belongs to
the workspace of the path (``{workspace_id}``) and carries the scope, and returns the
:class:`~appt_pipeline.store.tokens.TokenGrant`::

    from appt_pipeline.service.access import ApiRead, PageRead

    @router.get("/api/v1/workspaces/{workspace_id}/capacity")
    async def capacity(grant: ApiRead, workspace_id: WorkspaceIdPath) -> Response: ...

    @router.get("/workspaces/{workspace_id}/capacity", response_class=HTMLResponse)
    async def capacity_page(request: Request, grant: PageRead, workspace_id: WorkspaceIdPath) -> Response: ...

``ApiRead`` / ``ApiBook`` take the token only from ``Authorization: Bearer <token>`` (a cookie never
authorises an API call, so no cross-site request can). ``PageRead`` / ``PageBook`` also take it from the
HttpOnly, SameSite=Strict cookie :data:`SESSION_COOKIE` that the login form sets
(:mod:`appt_pipeline.service.web`). For another scope use ``Depends(api_access(scope))`` /
``Depends(page_access(scope))``.

Answers, checked in this order (every refusal is a :class:`~appt_pipeline.service.common.ServiceError`):

* **401** no token (``missing_token``), a malformed or unknown one (``invalid_token``), a revoked one
  (``token_revoked``); with ``WWW-Authenticate: Bearer``. Pages answer with the login form instead.
* **403** a token of another workspace (``wrong_workspace``) or without the scope (``missing_scope``).
* **503** the database cannot verify the token (``database_unavailable``).

Unknown leads (404) are the route's own answer, after access. The workspace check needs the path parameter to be
named ``workspace_id``; a route without it gets only the token and scope checks. Tokens are never logged or put
in an error; only token ids are.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from appt_pipeline.domain.vocab import TokenScope
from appt_pipeline.service.common import ServiceError
from appt_pipeline.service.reads import check_token
from appt_pipeline.store.tokens import TokenGrant, token_digest

#: Cookie holding the token of a signed-in page user (HttpOnly, SameSite=Strict, Secure over https).
SESSION_COOKIE = "appt_token"

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="workspaceToken", bearerFormat="appt_…",
    description="A workspace API token (`appt-pipeline tokens create WS --scope read[,book]`), SPEC §10.",
)
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, scheme_name="sessionCookie",
    description="The token, kept by the login form (`POST /login`) in an HttpOnly, SameSite=Strict cookie "
                "(pages only).",
)

_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="appt-pipeline"'}


class AccessDenied(ServiceError):
    """A 401 or 403 of the access check. ``page``: raised for a page route (answered with the login form or an
    HTML page); ``grant``: the verified token's grant for a 403 (the page says which workspace it is for)."""

    def __init__(self, status: int, reason: str, *, page: bool, grant: TokenGrant | None = None) -> None:
        detail = {
            "missing_token": "Sign in with a workspace token to see this page.",
            "invalid_token": "This token is not valid. Sign in with a current workspace token.",
            "token_revoked": "This token has been revoked. Sign in with a current workspace token.",
            "wrong_workspace": "Your token belongs to another workspace.",
            "missing_scope": "Your token does not have the scope this page needs.",
        }.get(reason)
        super().__init__(status, reason, headers=_UNAUTHORIZED_HEADERS if status == 401 else None, detail=detail)
        self.page = page
        self.grant = grant


async def authorize(request: Request, token: str | None, scope: TokenScope, *, page: bool) -> TokenGrant:
    """Verify ``token`` for ``scope`` on the workspace of the request's ``{workspace_id}`` (see the module doc).

    Returns the grant (also kept as ``request.state.grant``). Raises :class:`AccessDenied` (401/403) and
    ``DatabaseUnavailable`` (503).
    """
    if not token:
        raise AccessDenied(401, "missing_token", page=page)
    service = request.app.state.service
    if not service.started:
        await service.start()
    digest = token_digest(token)
    grant = service.token_grants.get(digest) if service.settings.token_cache_ttl_s > 0 else None
    if grant is None:
        check = await check_token(service.db, token)  # a malformed token is refused without a query
        if check.grant is None:
            raise AccessDenied(401, check.reason or "invalid_token", page=page)
        grant = check.grant
        if service.settings.token_cache_ttl_s > 0:
            service.token_grants[digest] = grant
    workspace_id = request.path_params.get("workspace_id")
    if workspace_id is not None and workspace_id != grant.workspace_id:
        raise AccessDenied(403, "wrong_workspace", page=page, grant=grant)
    if not grant.allows(scope):
        raise AccessDenied(403, "missing_scope", page=page, grant=grant)
    request.state.grant = grant
    return grant


#: An access dependency: resolves to the request's grant.
AccessDependency = Callable[..., Awaitable[TokenGrant]]


def api_access(scope: TokenScope) -> AccessDependency:
    """The dependency of an ``/api/`` route that needs ``scope``: ``Authorization: Bearer`` only."""

    async def api_token(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
                        ) -> TokenGrant:
        return await authorize(request, credentials.credentials if credentials else None, scope, page=False)

    return api_token


def page_access(scope: TokenScope) -> AccessDependency:
    """The dependency of a page route that needs ``scope``: ``Authorization: Bearer``, else the session cookie."""

    async def page_token(request: Request,
                         credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
                         cookie: Annotated[str | None, Depends(cookie_scheme)]) -> TokenGrant:
        token = credentials.credentials if credentials else cookie
        return await authorize(request, token, scope, page=True)

    return page_token


_API = {scope: api_access(scope) for scope in TokenScope}
_PAGE = {scope: page_access(scope) for scope in TokenScope}

#: A route parameter that requires a ``read`` token of the path's workspace (API: Bearer only).
ApiRead = Annotated[TokenGrant, Depends(_API[TokenScope.READ])]
#: A route parameter that requires a ``book`` token of the path's workspace (API: Bearer only).
ApiBook = Annotated[TokenGrant, Depends(_API[TokenScope.BOOK])]
#: A page parameter that requires a ``read`` token (Bearer or the session cookie of the login form).
PageRead = Annotated[TokenGrant, Depends(_PAGE[TokenScope.READ])]
#: A page parameter that requires a ``book`` token (Bearer or the session cookie of the login form).
PageBook = Annotated[TokenGrant, Depends(_PAGE[TokenScope.BOOK])]
