"""The part of a simulator that is the same for every provider: the request gate and admin basics.

Every API request (anything not under ``/_admin``) passes, in this order:

1. authentication (``Authorization: Bearer``) → the provider's 401 when the token is unknown;
2. an injected 429 burst, if one is active for the account (consumes no quota);
3. the rate limiter (``limits`` moving window per account) → the provider's 429 when exhausted;
   from here on the request is *accepted* and counted in :class:`~.common.Accounting`;
4. injected latency / timeout stall;
5. an injected 5xx (before the handler runs, or after it, see ``FaultSettings.error_phase``);
6. provider pre-checks (GHL ``Version`` header) and the route handler.

The provider's rate-limit headers are added to every response after step 3.

Webhooks (``webhooks.py``): every emitted :class:`~.common.ProviderEvent` is offered to
``self.webhooks`` (a :class:`~.webhooks.WebhookDelivery`), which asks ``_webhook_outgoing(event)``
where it goes — nowhere unless a subclass has subscriptions configured. Common admin routes:
``GET /_admin/webhooks/deliveries``, ``POST /_admin/webhooks/flush``, ``GET|PUT /_admin/webhooks/delivery``.

Provider admin routes are a table of :class:`AdminAction` rows (``admin_actions`` of the simulator
class) registered by one loop (:meth:`SimulatorBase._add_admin_routes`): each row names its HTTP
methods, path, handler ``(sim, AdminCall) -> dict`` and the body fields it requires. A missing
required field answers 400 ``{error}`` (wording from :meth:`SimulatorBase._admin_missing`), a body
that is not a JSON object 400 ``{error}``, a bad query parameter the provider's validation error.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from appt_pipeline.sandbox.common import (
    Accounting,
    AccountLimiter,
    ApiError,
    Clock,
    FaultInjector,
    FaultSettings,
    IdFactory,
    ProviderEvent,
    Quota,
    QuotaState,
    RequestRecord,
    SimulatorError,
    Stopper,
    gateway_html,
    utc_now,
)
from appt_pipeline.sandbox.webhooks import DeliverySettings, EventFeed, Outgoing, WebhookDelivery

CallNext = Callable[[Request], Awaitable[Response]]

_REQUIRED: Any = object()


@cache
def _adapter(kind: type) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


@dataclass(frozen=True)
class AdminCall:
    """One parsed admin request: path parameters, query parameters and the JSON-object body."""

    path: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def query(self, name: str, kind: type = str, default: Any = _REQUIRED) -> Any:
        """The query parameter ``name`` converted to ``kind`` (pydantic lax mode), else ``default``.

        Raises :class:`fastapi.exceptions.RequestValidationError` (answered as the provider's
        validation error, as FastAPI's own parameter checks are) when it is missing without a
        default or does not convert.
        """
        raw = self.params.get(name)
        if raw is None:
            if default is _REQUIRED:
                raise RequestValidationError(
                    [{"type": "missing", "loc": ("query", name), "msg": "Field required", "input": None}]
                )
            return default
        try:
            return _adapter(kind).validate_python(raw)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("query", name)} for e in exc.errors(include_url=False)]
            ) from None


AdminHandler = Callable[[Any, AdminCall], "dict[str, Any] | Awaitable[dict[str, Any]]"]


@dataclass(frozen=True)
class AdminAction:
    """One ``/_admin`` route: ``methods`` on ``path`` run ``handler(sim, call)``.

    ``required``: body fields that must be present and truthy (checked before the handler runs);
    ``body``: whether the handler reads a JSON-object body (implied by ``required``); ``doc``: the
    request and answer shapes.
    """

    methods: tuple[str, ...]
    path: str
    handler: AdminHandler
    required: tuple[str, ...] = ()
    doc: str = ""
    body: bool = False


async def admin_body(request: Request) -> dict[str, Any]:
    """The JSON-object body of an admin request (``{}`` when empty).

    Raises :class:`~.common.SimulatorError` (400) when it is not JSON or not an object.
    """
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise SimulatorError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise SimulatorError("body must be a JSON object")
    return data


def _admin_endpoint(sim: SimulatorBase, action: AdminAction) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    async def endpoint(request: Request) -> dict[str, Any]:
        body = await admin_body(request) if action.body or action.required else {}
        missing = [name for name in action.required if not body.get(name)]
        if missing:
            raise SimulatorError(sim._admin_missing(missing, action.required))
        result = action.handler(sim, AdminCall(dict(request.path_params), request.query_params, body))
        if inspect.isawaitable(result):
            result = await result
        return result

    endpoint.__name__ = getattr(action.handler, "__name__", "admin_action")
    endpoint.__doc__ = action.doc or None
    return endpoint


class SimulatorBase:
    """State-holding simulator object; subclasses add the provider's data, routes and shapes."""

    provider = "base"

    def __init__(
        self,
        *,
        id_seed: int | str = 0,
        faults: FaultSettings | None = None,
        clock: Clock = utc_now,
        webhook_settings: DeliverySettings | dict[str, Any] | None = None,
    ):
        self._lock = threading.RLock()
        self.id_seed = id_seed
        self.ids = IdFactory(id_seed)
        self.clock = clock
        self.limiter = AccountLimiter()
        self.accounting = Accounting()
        self.faults = FaultInjector(faults)
        self.emitted = EventFeed()
        self.stopper = Stopper()
        settings = self._default_delivery_settings()
        if isinstance(webhook_settings, DeliverySettings):
            settings = webhook_settings
        elif webhook_settings:
            settings = settings.changed(**webhook_settings)
        self.webhooks = WebhookDelivery(
            self._webhook_outgoing, settings, id_seed=id_seed, user_agent=f"appt-sandbox-{self.provider}-webhooks"
        )
        self.emitted.subscribe(self.webhooks.on_event)

    # ------------------------------------------------------------------ hooks for subclasses

    def _authenticate(self, request: Request) -> tuple[str, Any] | None:
        raise NotImplementedError

    def _quotas(self, principal: Any, request: Request) -> dict[str, Quota]:
        raise NotImplementedError

    def _rate_headers(self, principal: Any, states: dict[str, QuotaState], limited: bool) -> dict[str, str]:
        raise NotImplementedError

    def _unauthenticated(self, request: Request) -> Response:
        raise NotImplementedError

    def _rate_limited(self, request: Request, principal: Any, headers: dict[str, str], reset_in: float) -> Response:
        raise NotImplementedError

    def _burst_headers(self, principal: Any, reset_in: float) -> dict[str, str]:
        raise NotImplementedError

    def _error_body(self, request: Request, status: int, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def _server_error_body(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def _not_found_body(self, request: Request, status: int) -> dict[str, Any]:
        raise NotImplementedError

    def _validation_body(self, request: Request, exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def _precheck(self, request: Request, principal: Any) -> Response | None:
        return None

    def _add_routes(self, app: FastAPI) -> None:
        raise NotImplementedError

    #: The provider's admin routes (see :class:`AdminAction`), registered by :meth:`_add_admin_routes`.
    admin_actions: tuple[AdminAction, ...] = ()

    def _admin_missing(self, missing: list[str], required: tuple[str, ...]) -> str:
        """The admin error message when required body fields are missing."""
        return f"missing {', '.join(missing)}"

    def _add_admin_routes(self, app: FastAPI) -> None:
        """Register every row of ``admin_actions`` on ``app``, in table order."""
        for action in self.admin_actions:
            app.add_api_route(action.path, _admin_endpoint(self, action), methods=list(action.methods))

    def _default_delivery_settings(self) -> DeliverySettings:
        """The provider's webhook retry behaviour (compressed); see :class:`~.webhooks.DeliverySettings`."""
        return DeliverySettings()

    def _webhook_outgoing(self, event: ProviderEvent) -> list[Outgoing]:
        """Where ``event`` is delivered: one :class:`~.webhooks.Outgoing` per subscribed target.

        Called in the emitting thread (the simulator lock is held). Default: nowhere.
        """
        return []

    def reset(self, seed: Any = None) -> None:
        raise NotImplementedError

    def load(self, seed: Any) -> None:
        raise NotImplementedError

    def configure(self, **changes: Any) -> dict[str, Any]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers

    def now(self) -> datetime:
        return self.clock()

    def seed_epoch(self) -> datetime:
        """Now, truncated to the UTC day: the anchor of generated seed timestamps (``dateAdded``,
        ``created_at`` …) so the same seed gives the same data all day long."""
        return self.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def _emit(self, name: str, payload: dict[str, Any], account: str) -> None:
        self.emitted.emit(ProviderEvent(name, payload, account, self.now()))

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        """Wait until every webhook delivery queued so far is delivered or given up (retries
        included); ``False`` if ``timeout`` seconds pass first."""
        return self.webhooks.flush(timeout)

    def _reset_webhooks(self) -> None:
        """Drop queued deliveries and delivery records (subclasses also drop their subscriptions)."""
        self.webhooks.reset()

    def max_requests_in_window(self, account: str, seconds: float) -> int:
        """Peak number of accepted requests of ``account`` in any ``seconds``-long window."""
        return self.accounting.max_requests_in_window(account, seconds)

    def clear_counters(self) -> None:
        """Forget rate-limit windows, accounting and emitted events (state kept)."""
        self.limiter.reset()
        self.accounting.reset()
        self.emitted.drain()

    def server_error(self, request: Request, status: int) -> Response:
        if status == 500:
            return JSONResponse(self._server_error_body(request), status_code=500)
        return HTMLResponse(gateway_html(status), status_code=status)

    # ------------------------------------------------------------------ the gate

    async def gate(self, request: Request, call_next: CallNext) -> Response:
        method, path = request.method, request.url.path
        auth = self._authenticate(request)
        if auth is None:
            response = self._unauthenticated(request)
            self.accounting.record(
                RequestRecord(time.time(), None, method, path, response.status_code, "unauthenticated")
            )
            return response
        account, principal = auth
        request.state.account = account
        request.state.principal = principal

        burst = self.faults.check_burst(account)
        if burst is not None:
            at = time.time()
            self.accounting.record_limited(account, at)
            response = self._rate_limited(request, principal, self._burst_headers(principal, burst), burst)
            self.accounting.record(RequestRecord(at, account, method, path, response.status_code, "rate_limited"))
            return response

        allowed, states, at = self.limiter.acquire(account, self._quotas(principal, request))
        if not allowed:
            self.accounting.record_limited(account, at)
            reset_in = max(s.reset_in for s in states.values() if not s.allowed)
            response = self._rate_limited(request, principal, self._rate_headers(principal, states, True), reset_in)
            self.accounting.record(RequestRecord(at, account, method, path, response.status_code, "rate_limited"))
            return response
        self.accounting.record_accepted(account, at)
        headers = self._rate_headers(principal, states, False)
        query = request.url.query

        canned = self.faults.canned_for(path)
        if canned is not None:
            response = (PlainTextResponse(canned.body, status_code=canned.status) if isinstance(canned.body, str)
                        else JSONResponse(canned.body, status_code=canned.status))
            response.headers.update(headers)
            self.accounting.record(RequestRecord(at, account, method, path, response.status_code, "canned", query))
            return response

        decision = self.faults.decide(path)
        if decision.delay:
            await self.stopper.sleep(decision.delay)
        if decision.error_status is not None and decision.error_phase == "before":
            response = self.server_error(request, decision.error_status)
        else:
            response = self._precheck(request, principal) or await call_next(request)
            if decision.error_status is not None:
                response = self.server_error(request, decision.error_status)
        response.headers.update(headers)
        self.accounting.record(RequestRecord(at, account, method, path, response.status_code, "accepted", query))
        return response

    # ------------------------------------------------------------------ the app

    def create_app(self) -> FastAPI:
        """A FastAPI app serving the provider API and ``/_admin`` for this simulator object."""
        app = FastAPI(title=f"{self.provider} simulator", docs_url=None, redoc_url=None, openapi_url=None)
        sim = self

        @app.middleware("http")
        async def _gate(request: Request, call_next: CallNext) -> Response:
            if request.url.path.startswith("/_admin"):
                return await call_next(request)
            return await sim.gate(request, call_next)

        @app.exception_handler(ApiError)
        async def _api_error(request: Request, exc: ApiError) -> Response:
            return JSONResponse(sim._error_body(request, exc.status, exc.body), exc.status, headers=exc.headers)

        @app.exception_handler(SimulatorError)
        async def _sim_error(request: Request, exc: SimulatorError) -> Response:
            if request.url.path.startswith("/_admin"):
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(sim._error_body(request, 400, {"message": str(exc)}), status_code=400)

        @app.exception_handler(StarletteHTTPException)
        async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if request.url.path.startswith("/_admin"):
                return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
            return JSONResponse(sim._not_found_body(request, exc.status_code), status_code=exc.status_code)

        @app.exception_handler(RequestValidationError)
        async def _validation(request: Request, exc: RequestValidationError) -> Response:
            status, body = sim._validation_body(request, exc)
            return JSONResponse(body, status_code=status)

        self._add_common_admin_routes(app)
        self._add_admin_routes(app)
        self._add_routes(app)
        return app

    def _add_common_admin_routes(self, app: FastAPI) -> None:
        sim = self
        body_of = admin_body

        @app.post("/_admin/reset")
        async def admin_reset(request: Request) -> dict[str, Any]:
            """Back to the initial seed (or the seed in the body); counters, faults, events cleared."""
            data = await body_of(request)
            sim.reset(data.get("seed"))
            return {"ok": True}

        @app.post("/_admin/seed")
        async def admin_seed(request: Request) -> dict[str, Any]:
            """Replace the provider data with the seed in the body (counters kept)."""
            data = await body_of(request)
            sim.load(data.get("seed", data))
            return {"ok": True}

        @app.get("/_admin/state")
        async def admin_state() -> dict[str, Any]:
            return sim.snapshot()

        @app.get("/_admin/config")
        async def admin_config() -> dict[str, Any]:
            return sim.config()

        @app.put("/_admin/config")
        async def admin_configure(request: Request) -> dict[str, Any]:
            return sim.configure(**(await body_of(request)))

        @app.get("/_admin/faults")
        async def admin_faults() -> dict[str, Any]:
            return {"settings": sim.faults.settings.to_dict(), "injected": dict(sim.faults.injected)}

        @app.put("/_admin/faults")
        async def admin_set_faults(request: Request) -> dict[str, Any]:
            return sim.faults.configure(**(await body_of(request))).to_dict()

        @app.delete("/_admin/faults")
        async def admin_clear_faults() -> dict[str, Any]:
            sim.faults.clear()
            return {"ok": True}

        @app.post("/_admin/faults/canned")
        async def admin_canned(request: Request) -> dict[str, Any]:
            """``{path_prefix, status, body, count?}``: a fixed answer for matching requests (see
            :meth:`FaultInjector.can`); cleared by ``DELETE /_admin/faults``."""
            data = await body_of(request)
            try:
                answer = sim.faults.can(str(data["path_prefix"]), int(data["status"]), data.get("body"),
                                        data.get("count"))
            except (KeyError, TypeError, ValueError):
                raise SimulatorError("canned answers need path_prefix, status and body") from None
            return {"path_prefix": answer.path_prefix, "status": answer.status, "remaining": answer.remaining}

        @app.post("/_admin/faults/burst_429")
        async def admin_burst(request: Request) -> dict[str, Any]:
            data = await body_of(request)
            sim.faults.burst_429(count=data.get("count"), seconds=data.get("seconds"), account=data.get("account"))
            return {"ok": True}

        @app.get("/_admin/accounting")
        async def admin_accounting(account: str | None = None, window: float | None = None) -> dict[str, Any]:
            return {"accounts": sim.accounting.summary(account, window)}

        @app.post("/_admin/accounting/reset")
        async def admin_accounting_reset() -> dict[str, Any]:
            sim.limiter.reset()
            sim.accounting.reset()
            return {"ok": True}

        @app.get("/_admin/emitted")
        async def admin_emitted() -> dict[str, Any]:
            return {"events": [_event_json(e) for e in sim.emitted.list()]}

        @app.post("/_admin/emitted/drain")
        async def admin_drain() -> dict[str, Any]:
            return {"events": [_event_json(e) for e in sim.emitted.drain()]}

        @app.get("/_admin/webhooks/deliveries")
        async def admin_deliveries(state: str | None = None, limit: int | None = None) -> dict[str, Any]:
            """``{counts: {emitted, pending, delivered, failed, attempts, retries, by_status}, settings,
            deliveries: [{id, event, account, target, url, resource, webhook_id, state, attempts,
            statuses, errors, reason, emitted_at, first_attempt_at, last_attempt_at, finished_at}]}``
            — ids, names and status codes only, never bodies."""
            return sim.webhooks.summary(state=state, limit=limit)

        @app.post("/_admin/webhooks/flush")
        async def admin_flush(request: Request) -> dict[str, Any]:
            """``{timeout?: seconds (default 10)}`` → ``{flushed: bool, counts}`` once everything
            queued so far is delivered or given up (or the timeout passed)."""
            data = await body_of(request)
            timeout = float(data.get("timeout", 10.0))
            flushed = await asyncio.get_running_loop().run_in_executor(None, sim.webhooks.flush, timeout)
            return {"flushed": flushed, "counts": sim.webhooks.counts()}

        @app.get("/_admin/webhooks/delivery")
        async def admin_delivery_settings() -> dict[str, Any]:
            return sim.webhooks.settings.to_dict()

        @app.put("/_admin/webhooks/delivery")
        async def admin_set_delivery_settings(request: Request) -> dict[str, Any]:
            """Change :class:`~.webhooks.DeliverySettings` fields (``timeout``, ``ordered``,
            ``retry_delay``, ``retry_budget``, ``max_retries`` …)."""
            return sim.webhooks.configure(**(await body_of(request))).to_dict()


def _event_json(event: ProviderEvent) -> dict[str, Any]:
    return {"name": event.name, "account": event.account, "at": event.at.isoformat(), "payload": event.payload}
