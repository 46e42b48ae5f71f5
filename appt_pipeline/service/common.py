"""What every API and page route of the service shares (SPEC §10): path parameters, the error answer, and the
handlers that turn :class:`ServiceError` and an unavailable database into it.

Errors of ``/api/`` routes are JSON ``{"error": <reason>}`` (reason codes are safe to log); errors of page routes
are HTML pages (:mod:`appt_pipeline.service.web`). A route raises :class:`ServiceError` (e.g. ``ServiceError(404,
"unknown_lead")``) and documents it with :func:`error_responses`.
"""

from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel

from appt_pipeline.service.db import DatabaseUnavailable
from appt_pipeline.service.keys import MAX_WORKSPACE_ID_CHARS

#: Longest lead id a route accepts (longer ids are answered 422).
MAX_LEAD_ID_CHARS = 500

#: ``{workspace_id}`` of a route: ``workspaces.id`` (SPEC §1).
WorkspaceIdPath = Annotated[str, Path(min_length=1, max_length=MAX_WORKSPACE_ID_CHARS,
                                      description="workspaces.id (SPEC §1)")]
#: ``{lead_id}`` of a route: ``leads.id`` of a lead of that workspace.
LeadIdPath = Annotated[str, Path(min_length=1, max_length=MAX_LEAD_ID_CHARS,
                                 description="leads.id of a lead of the workspace (SPEC §1)")]

#: Headers of every API answer: personal data must not sit in shared caches.
NO_STORE = {"Cache-Control": "no-store"}


class ErrorBody(BaseModel):
    """An error answer: ``error`` is a reason code (``missing_token``, ``invalid_token``, ``token_revoked``,
    ``wrong_workspace``, ``missing_scope``, ``unknown_lead``, ``database_unavailable``, …)."""

    error: str


class ServiceError(Exception):
    """Answer the request with ``status`` and reason code ``reason`` (JSON for ``/api/``, HTML for pages).

    ``headers``: extra response headers (e.g. ``WWW-Authenticate``); ``detail``: a sentence for people,
    shown on pages (never secrets or personal data).
    """

    def __init__(self, status: int, reason: str, *, headers: dict[str, str] | None = None,
                 detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.detail = detail


_DESCRIPTIONS: dict[int, str] = {
    401: "no token, or an unknown, malformed or revoked one (`missing_token`, `invalid_token`, `token_revoked`)",
    403: "the token belongs to another workspace (`wrong_workspace`) or lacks the scope (`missing_scope`)",
    404: "no such lead in the workspace (`unknown_lead`)",
    503: "database unavailable (`database_unavailable`); retry after `Retry-After` seconds",
}


def error_responses(*statuses: int, media_type: str = "application/json") -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error ``statuses`` of a route (``ErrorBody`` for JSON routes, an
    HTML page for ``media_type="text/html"``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": _DESCRIPTIONS[status]}
        if media_type == "application/json":
            entry["model"] = ErrorBody
        else:
            entry["content"] = {"text/html": {"schema": {"type": "string"}}}
        if status == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
        out[status] = entry
    return out


def is_api_path(path: str) -> bool:
    """True for ``/api/…`` paths (JSON answers); every other route of this module's kind is a page (HTML)."""
    return path.startswith("/api/")


def install_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ServiceError` and :class:`~appt_pipeline.service.db.DatabaseUnavailable` raised by a route:
    JSON on ``/api/`` paths, the error page of :mod:`appt_pipeline.service.web` elsewhere. Needs
    ``app.state.service`` (its ``retry_after_s`` is the ``Retry-After`` of 503 answers)."""
    from appt_pipeline.service.web import render_error

    retry_after = str(app.state.service.settings.retry_after_s)

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        if is_api_path(request.url.path):
            return Response(orjson.dumps({"error": exc.reason}), status_code=exc.status,
                            media_type="application/json", headers={**NO_STORE, **exc.headers})
        return render_error(request, exc)

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        return await service_error(request, ServiceError(
            503, "database_unavailable", headers={"Retry-After": retry_after},
            detail="The database is not reachable right now. Try again in a few seconds."))

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(DatabaseUnavailable, database_unavailable)
