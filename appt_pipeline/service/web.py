"""Server-rendered pages: the shared layout, the login form and its session cookie (SPEC §10).

Every page extends ``templates/base.html`` (top bar with the signed-in workspace and *Sign out*, the page, a
footer) and uses ``static/app.css``; a page route renders with :func:`render_page`, which adds the security
headers (a strict Content-Security-Policy: scripts and styles only from ``/static/``, no inline code, no
framing; ``Cache-Control: no-store``). Templates are Jinja2 with autoescaping and ``StrictUndefined``. Blocks of
``base.html``: ``title``, ``head``, ``nav`` (links in the top bar), ``content``, ``scripts``. Shared macros:
``templates/macros.html`` (``status_badge(status)``, ``chip(text, title)``).

Routes (not in the OpenAPI document: they are for browsers):

* ``GET /login?next=/path`` — the login form (and, when signed in, which workspace the token is for);
* ``POST /login`` (form ``token``, ``next``) — verifies the token (401 with the form again when it is
  unknown, malformed or revoked), sets cookie :data:`~appt_pipeline.service.access.SESSION_COOKIE` (HttpOnly,
  SameSite=Strict, Path=/, Secure when the request came over https — directly or per ``X-Forwarded-Proto`` —,
  a session cookie) and answers 303 to ``next`` when it is a path of this site, else to ``/login``. A
  cross-site POST (``Sec-Fetch-Site: cross-site``, or without that header an ``Origin`` of another host) is
  refused with 403, so no other site can sign a browser in with its own token;
* ``POST /logout`` — deletes the cookie, 303 to ``/login``;
* ``GET /static/…`` — CSS and JavaScript.

A page route refused by the access check (:mod:`appt_pipeline.service.access`) answers 401 with the login form
(``next`` = the page) or an HTML 403 page; a :class:`~appt_pipeline.service.common.ServiceError` of a page is an
HTML page with its status (:func:`render_error`).
"""

import functools
import hashlib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from appt_pipeline.service.access import SESSION_COOKIE, AccessDenied
from appt_pipeline.service.common import ServiceError
from appt_pipeline.service.reads import check_token
from appt_pipeline.store.tokens import TokenGrant

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")

#: Headers of every page.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_MAX_NEXT_CHARS = 2000


@functools.cache
def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES_DIR), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["static_url"] = static_url
    return Jinja2Templates(env=env)


@functools.cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<content hash>``: a changed file gets a new URL (no stale cached CSS or JS)."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def render_page(request: Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200,
                grant: TokenGrant | None = None, headers: dict[str, str] | None = None) -> HTMLResponse:
    """Render ``template`` (a page extending ``base.html``) with ``context``, the signed-in ``grant`` (shown in
    the top bar; default: the one the access check stored on the request) and the page headers."""
    ctx = {"grant": grant if grant is not None else getattr(request.state, "grant", None), **(context or {})}
    return _templates().TemplateResponse(request, template, ctx, status_code=status,
                                         headers={**PAGE_HEADERS, **(headers or {})})


def safe_next(value: str | None) -> str | None:
    """``value`` when it is a path of this site (``/…``, not ``//host`` or ``/\\host``, no scheme or host, no
    control characters), else ``None``: the login form never redirects elsewhere."""
    if not value or len(value) > _MAX_NEXT_CHARS or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or "\\" in value:
        return None
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else None


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def render_login(request: Request, *, status: int = 200, next_path: str | None = None, message: str | None = None,
                 grant: TokenGrant | None = None, headers: dict[str, str] | None = None,
                 refresh: bool = False) -> HTMLResponse:
    """The login page (``login.html``); ``refresh``: reload once at once (see :func:`render_error`)."""
    return render_page(request, "login.html", {"next": safe_next(next_path) or "", "message": message,
                                               "refresh": refresh}, status=status, grant=grant, headers=headers)


def render_error(request: Request, exc: ServiceError) -> Response:
    """The HTML answer of a page's :class:`ServiceError`: the login form for a 401 (the cookie is cleared when it
    held a bad token), else ``error.html`` with the status.

    A browser never sends a SameSite=Strict cookie with a navigation that comes from another site (a link in the
    CRM): such a request arrives without any credential although the person is signed in. Its login form then
    reloads the page once at once (``<meta http-equiv="refresh">``); that reload comes from this site, so the
    cookie goes with it — and when there is none, the form simply stays (the reload is not cross-site).
    """
    if exc.status == 401:
        cross_site = request.headers.get("sec-fetch-site", "").lower() == "cross-site"
        response = render_login(request, status=401, next_path=_here(request), message=exc.detail,
                                headers=exc.headers,
                                refresh=cross_site and exc.reason == "missing_token" and request.method == "GET")
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response
    titles = {403: "Not allowed", 404: "Not found", 503: "Unavailable"}
    grant = exc.grant if isinstance(exc, AccessDenied) else None
    return render_page(request, "error.html", {
        "status": exc.status, "title": titles.get(exc.status, "Error"), "reason": exc.reason,
        "detail": exc.detail or "", "login_next": _here(request) if exc.status == 403 else "",
    }, status=exc.status, grant=grant, headers=exc.headers)


def _is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _cross_site(request: Request) -> bool:
    """Whether a POST comes from another site: the browser's ``Sec-Fetch-Site`` when it sends one (every current
    browser does), else an ``Origin`` naming another host than ``Host`` / ``X-Forwarded-Host``."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.lower() == "cross-site"
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    hosts = {request.headers.get("host", "").lower(),
             request.headers.get("x-forwarded-host", "").split(",")[0].strip().lower()}
    return urlsplit(origin).netloc.lower() not in hosts


async def _cookie_grant(request: Request) -> TokenGrant | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    service = request.app.state.service
    if not service.started:
        await service.start()
    return (await check_token(service.db, token)).grant


router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next_path: Annotated[str | None, Query(alias="next")] = None) -> Response:
    """The login form; says which workspace the current session is for, if any."""
    return render_login(request, next_path=next_path, grant=await _cookie_grant(request))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form()] = "",
                next_path: Annotated[str, Form(alias="next")] = "") -> Response:
    """Verify the token and keep it in the session cookie (see the module doc)."""
    if _cross_site(request):
        raise ServiceError(403, "cross_site_login", detail="Sign in from this site's own login form.")
    token = token.strip()
    service = request.app.state.service
    if not service.started:
        await service.start()
    check = await check_token(service.db, token) if token else None
    if check is None or check.grant is None:
        message = AccessDenied(401, check.reason if check and check.reason else "missing_token", page=True).detail
        return render_login(request, status=401, next_path=next_path, message=message)
    response = RedirectResponse(safe_next(next_path) or "/login", status_code=303,
                                headers={"Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="strict", secure=_is_https(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_is_https(request))
    return response


def install_pages(app: FastAPI) -> None:
    """Add the login/logout routes and ``/static`` to ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
