"""Provider clients (GoHighLevel, Calendly) and response normalisation → observations.

Layout: :mod:`.normalize` (pure parsing and observation building), :mod:`.http` (the shared transport
policy: auth headers, one limiter per provider account, retries, timeouts, masked errors, call stats),
:mod:`.ghl` and :mod:`.calendly` (async clients). Providers never import ``appt_pipeline.store`` or
``appt_pipeline.sandbox`` (import rules: docs/README.md). Importing this package does no I/O.
"""

from appt_pipeline.providers.calendly import CalendlyClient
from appt_pipeline.providers.ghl import GhlClient
from appt_pipeline.providers.http import (
    CALENDLY_RATE_LIMIT,
    GHL_RATE_LIMIT,
    AccountLimiter,
    CallStats,
    ErrorKind,
    LimiterRegistry,
    ProviderError,
    RateLimit,
    RetryPolicy,
)

__all__ = [
    "CALENDLY_RATE_LIMIT",
    "GHL_RATE_LIMIT",
    "AccountLimiter",
    "CalendlyClient",
    "CallStats",
    "ErrorKind",
    "GhlClient",
    "LimiterRegistry",
    "ProviderError",
    "RateLimit",
    "RetryPolicy",
]
