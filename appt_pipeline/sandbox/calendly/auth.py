"""Calendly auth, rate limits and error bodies: the gate hooks (docs "rate limits"; see the package docstring)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from appt_pipeline.sandbox.calendly.model import (
    _not_found,
    _User,
)
from appt_pipeline.sandbox.common import (
    Quota,
    QuotaState,
)


class CalendlyGate:
    """Calendly's gate hooks of :class:`~appt_pipeline.sandbox.base.SimulatorBase` (mixed into the simulator)."""

    # ================================================================= gate hooks

    def _authenticate(self, request: Request) -> tuple[str, Any] | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        user = self._by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        return (user.uri, user) if user else None

    def _general_quota(self, user: _User) -> Quota:
        amount = self.free_rate_limit if user.plan == "free" else self.rate_limit
        return Quota(amount, self.rate_window_seconds)

    def _quotas(self, principal: Any, request: Request | None) -> dict[str, Quota]:
        quotas = {"general": self._general_quota(principal)}
        if request is not None and request.method == "POST" and request.url.path.rstrip("/") == "/invitees":
            for n, (amount, seconds) in enumerate(self.invitee_limits.get(principal.plan, ())):
                quotas[f"invitees_{n}"] = Quota(amount, seconds)
        return quotas

    def _rate_headers(self, principal: Any, states: dict[str, QuotaState], limited: bool) -> dict[str, str]:
        shown = states["general"]
        if limited:
            shown = max((s for s in states.values() if not s.allowed), key=lambda s: s.reset_in)
        return {
            "X-RateLimit-Limit": str(shown.quota.amount),
            "X-RateLimit-Remaining": "0" if limited else str(shown.remaining),
            "X-RateLimit-Reset": str(max(1, math.ceil(shown.reset_in))),
            "X-RateLimit-Tier": principal.plan,
        }

    def _burst_headers(self, principal: Any, reset_in: float) -> dict[str, str]:
        quota = self._general_quota(principal)
        return {
            "X-RateLimit-Limit": str(quota.amount),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(max(1, math.ceil(reset_in))),
            "X-RateLimit-Tier": principal.plan,
        }

    def _unauthenticated(self, request: Request) -> Response:
        return JSONResponse({"title": "Unauthenticated", "message": "The access token is invalid"}, status_code=401)

    def _rate_limited(self, request: Request, principal: Any, headers: dict[str, str], reset_in: float) -> Response:
        body = {
            "title": "Too Many Requests",
            "message": "You have exceeded the rate limit. Please try again after the time in X-RateLimit-Reset.",
        }
        return JSONResponse(body, status_code=429, headers=headers)

    def _server_error_body(self, request: Request) -> dict[str, Any]:
        return {
            "title": "Internal Server Error",
            "message": "The server encountered an unexpected condition that prevented it from fulfilling the request.",
        }

    def _not_found_body(self, request: Request, status: int) -> dict[str, Any]:
        if status == 405:
            return {"title": "Method Not Allowed", "message": "The method is not allowed for the requested URL."}
        return _not_found().body

    def _validation_body(self, request: Request, exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
        details = [{"parameter": str(e.get("loc", ["", ""])[-1]), "message": str(e.get("msg"))} for e in exc.errors()]
        return 400, {"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": details}

    # ================================================================= HTTP API
