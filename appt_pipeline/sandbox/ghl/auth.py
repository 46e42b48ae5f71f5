"""GHL auth, ``Version`` check, rate limits and error bodies: the gate hooks (see the package docstring)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from appt_pipeline.sandbox.common import (
    Quota,
    QuotaState,
)


class GhlGate:
    """The gate hooks of :class:`~appt_pipeline.sandbox.base.SimulatorBase` for GHL (mixed into the simulator)."""

    # ================================================================= gate hooks

    @staticmethod
    def _trace(request: Request) -> str:
        return request.state.trace_id

    def _authenticate(self, request: Request) -> tuple[str, Any] | None:
        request.state.trace_id = self.ids.trace_id()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        loc = self._by_token.get(token.strip()) if scheme.lower() == "bearer" else None
        return (loc.id, loc) if loc else None

    def _quotas(self, principal: Any, request: Request) -> dict[str, Quota]:
        quotas = {"burst": Quota(self.rate_limit, self.rate_window_seconds)}
        if self.daily_limit:
            quotas["daily"] = Quota(self.daily_limit, 86_400, fixed=True)
        return quotas

    def _rate_headers(self, principal: Any, states: dict[str, QuotaState], limited: bool) -> dict[str, str]:
        burst = states["burst"]
        headers = {
            "X-RateLimit-Max": str(burst.quota.amount),
            "X-RateLimit-Remaining": str(burst.remaining),
            "X-RateLimit-Interval-Milliseconds": str(burst.quota.seconds * 1000),
        }
        daily = states.get("daily")
        if daily:
            headers["X-RateLimit-Limit-Daily"] = str(daily.quota.amount)
            headers["X-RateLimit-Daily-Remaining"] = str(daily.remaining)
            headers["X-RateLimit-Daily-Reset"] = str(int(daily.reset_in * 1000))
        if limited:
            blocked = [s for s in states.values() if not s.allowed]
            headers["Retry-After"] = str(max(1, math.ceil(max(s.reset_in for s in blocked))))
            if not burst.allowed:
                headers["X-RateLimit-Remaining"] = "0"
        return headers

    def _burst_headers(self, principal: Any, reset_in: float) -> dict[str, str]:
        quotas = self._quotas(principal, None)  # type: ignore[arg-type]
        states = {name: self.limiter.peek(principal.id, name, q) for name, q in quotas.items()}
        headers = self._rate_headers(principal, states, False)
        headers["X-RateLimit-Remaining"] = "0"
        headers["Retry-After"] = str(max(1, math.ceil(reset_in)))
        return headers

    def _unauthenticated(self, request: Request) -> Response:
        body = {
            "statusCode": 401,
            "message": "Invalid token: access token is invalid",
            "error": "Unauthorized",
            "traceId": self._trace(request),
        }
        return JSONResponse(body, status_code=401)

    def _rate_limited(self, request: Request, principal: Any, headers: dict[str, str], reset_in: float) -> Response:
        body = {"statusCode": 429, "message": "Too Many Requests", "traceId": self._trace(request)}
        return JSONResponse(body, status_code=429, headers=headers)

    def _error_body(self, request: Request, status: int, body: dict[str, Any]) -> dict[str, Any]:
        out = {"statusCode": status, **body}
        out.setdefault("traceId", getattr(request.state, "trace_id", None) or self.ids.trace_id())
        return out

    def _server_error_body(self, request: Request) -> dict[str, Any]:
        return {"statusCode": 500, "message": "Internal server error", "traceId": self._trace(request)}

    def _not_found_body(self, request: Request, status: int) -> dict[str, Any]:
        if status == 405:
            return self._error_body(request, 405, {"message": "Method Not Allowed", "error": "Method Not Allowed"})
        return self._error_body(
            request, status, {"message": f"Cannot {request.method} {request.url.path}", "error": "Not Found"}
        )

    def _validation_body(self, request: Request, exc: RequestValidationError) -> tuple[int, dict[str, Any]]:
        messages = [str(e.get("msg")) for e in exc.errors()]
        return 422, self._error_body(request, 422, {"message": messages, "error": "Unprocessable Entity"})

    def _precheck(self, request: Request, principal: Any) -> Response | None:
        version = request.headers.get("version")
        if not version:
            message = "Version header was not found"
        elif version not in self.versions:
            message = f"Invalid Version header: {version!r} is not supported"
        else:
            return None
        body = self._error_body(request, 400, {"message": message, "error": "Bad Request"})
        return JSONResponse(body, status_code=400)
