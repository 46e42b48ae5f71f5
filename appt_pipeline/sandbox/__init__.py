"""Provider simulators: GoHighLevel (LeadConnector API v2) and Calendly (API v2) on loopback.

They are part of the product (demo, tests and benchmarks run against them) and behave like the real
services: real JSON shapes and status codes, auth and ``Version`` checks, the real rate limits and
headers, keyset pagination, start-time windows, free slots, plus an admin interface (``/_admin``
and Python methods) to make the providers' truth change, fault injection and request accounting.
The sandbox keeps its own state and never imports ``appt_pipeline.store``.

Quick start::

    from appt_pipeline.sandbox import GhlSimulator, SimulatorServer, sample_ghl_seed

    sim = GhlSimulator(sample_ghl_seed(contacts=50))
    with SimulatorServer(sim) as server:
        ...  # point the GHL client at server.base_url

Signed webhooks (``webhooks.py``)::

    ghl.set_webhooks("http://127.0.0.1:8000/webhooks/ghl/<workspace_id>", legacy_rsa=False)
    ghl.webhook_public_keys()        # {"ghl_webhook_public_key": ..., "ghl_webhook_legacy_public_key": ...}
    sub = calendly.create_webhook_subscription("http://127.0.0.1:8000/webhooks/calendly/<workspace_id>",
                                               organization=org_uri)
    sub["signing_key"]               # the workspace secret calendly_webhook_signing_key
    ghl.flush_webhooks(timeout=10)   # wait until everything emitted so far is delivered or given up
"""

from appt_pipeline.sandbox.calendly import CalendlySimulator, create_calendly_app
from appt_pipeline.sandbox.common import (
    Accounting,
    FaultSettings,
    ProviderEvent,
    RequestRecord,
    SimulatorError,
)
from appt_pipeline.sandbox.ghl import GhlSimulator, create_ghl_app
from appt_pipeline.sandbox.server import SimulatorServer
from appt_pipeline.sandbox.state import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlyUser,
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    sample_calendly_seed,
    sample_ghl_seed,
)
from appt_pipeline.sandbox.webhooks import (
    DeliveryRecord,
    DeliverySettings,
    EventFeed,
    GhlSigningKeys,
    WebhookDelivery,
)

__all__ = [
    "Accounting",
    "CalendlyEventType",
    "CalendlyInvitee",
    "CalendlyScheduledEvent",
    "CalendlySeed",
    "CalendlySimulator",
    "CalendlyUser",
    "DeliveryRecord",
    "DeliverySettings",
    "EventFeed",
    "FaultSettings",
    "GhlAppointment",
    "GhlCalendar",
    "GhlContact",
    "GhlLocation",
    "GhlSeed",
    "GhlSigningKeys",
    "GhlSimulator",
    "ProviderEvent",
    "RequestRecord",
    "SimulatorError",
    "SimulatorServer",
    "WebhookDelivery",
    "create_calendly_app",
    "create_ghl_app",
    "sample_calendly_seed",
    "sample_ghl_seed",
]
