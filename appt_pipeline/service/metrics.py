"""Prometheus metrics of the intake service (``GET /metrics``, prometheus-client text format; docs/operations.md §3).

One :class:`ServiceMetrics` per app (its own ``CollectorRegistry``, so several apps in one process — tests — never
collide). Labels are provider names, HTTP status codes, reason codes, route templates and workspace ids — never
anything from a body, a header or a token (SPEC §11).

* ``appt_webhook_deliveries_total`` (counter; ``provider``, ``status`` = HTTP code): every delivery answered;
* ``appt_webhook_signature_failures_total`` (counter; ``provider``, ``reason`` such as ``bad_signature``): 401s;
* ``appt_database_errors_total`` (counter; ``reason``: ``timeout``, ``pool_timeout``, ``closed``,
  ``connection_error``, ``database_error``): a request found the database unavailable;
* ``appt_http_request_duration_seconds`` (histogram; ``method``, ``route`` = template, ``other`` for unknown
  paths): from the request to the last response byte handed to the server;
* ``appt_webhook_staging_backlog`` (gauge; ``workspace``): pending ``webhook_events`` rows, read at scrape time
  (one query on the partial pending index);
* ``appt_webhook_staging_oldest_pending_age_seconds`` (gauge; ``workspace``): age of the oldest pending row;
* ``appt_webhook_staging_scrape_ok`` (gauge): 1 when the backlog could be read at the last scrape, else 0.

With ``serve --workers N`` (N > 1) each worker has its own counters: a scrape sees one worker's (run one worker
per port, or set up prometheus-client's multiprocess mode).
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Latency buckets (seconds): the intake answers in ~1 ms; group commits and pool waits reach tens of ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Pending rows per workspace and the oldest one's ``received_at`` (psycopg; uses the partial pending index).
BACKLOG_SQL = ("SELECT workspace_id, count(*), min(received_at) FROM webhook_events WHERE status = 'pending' "
               "GROUP BY workspace_id")


class ServiceMetrics:
    """The service's metrics (module doc) in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter("appt_webhook_deliveries", "Webhook deliveries answered, by provider and HTTP "
                                  "status.", ["provider", "status"], registry=self.registry)
        self.signature_failures = Counter("appt_webhook_signature_failures", "Webhook deliveries refused with 401, "
                                          "by provider and reason.", ["provider", "reason"], registry=self.registry)
        self.database_errors = Counter("appt_database_errors", "Requests that found the database unavailable, by "
                                       "reason.", ["reason"], registry=self.registry)
        self.latency = Histogram("appt_http_request_duration_seconds", "HTTP request latency (seconds), by method "
                                 "and route template.", ["method", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.backlog = Gauge("appt_webhook_staging_backlog", "Pending webhook_events rows, by workspace.",
                             ["workspace"], registry=self.registry)
        self.oldest_age = Gauge("appt_webhook_staging_oldest_pending_age_seconds", "Age (seconds) of the oldest "
                                "pending webhook_events row, by workspace.", ["workspace"], registry=self.registry)
        self.scrape_ok = Gauge("appt_webhook_staging_scrape_ok", "1 when the staging backlog could be read at the "
                               "last scrape.", registry=self.registry)

    def delivery(self, provider: str, status: int, reason: str | None) -> None:
        """Count one answered delivery (and a 401's reason)."""
        self.deliveries.labels(provider, str(status)).inc()
        if status == 401 and reason:
            self.signature_failures.labels(provider, reason).inc()

    def set_backlog(self, rows: list[tuple[str, int, datetime]], now: datetime | None = None) -> None:
        """Replace the backlog gauges with ``rows`` (workspace, pending count, oldest ``received_at`` UTC)."""
        now = now or datetime.now(UTC)
        self.backlog.clear()
        self.oldest_age.clear()
        for workspace_id, pending, oldest in rows:
            self.backlog.labels(workspace_id).set(pending)
            self.oldest_age.labels(workspace_id).set(max(0.0, (now - oldest).total_seconds()))
        self.scrape_ok.set(1)

    async def render(self, read_backlog: Callable[[], Awaitable[list[tuple[str, int, datetime]] | None]]
                     ) -> tuple[bytes, str]:
        """The text exposition (body, content type), after refreshing the backlog with ``read_backlog`` (``None``:
        the database did not answer — the gauges keep their last values and ``scrape_ok`` is 0)."""
        rows = await read_backlog()
        if rows is None:
            self.scrape_ok.set(0)
        else:
            self.set_backlog(rows)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_label(scope: dict[str, Any]) -> str:
    """The route template a request matched (``/api/v1/workspaces/{workspace_id}/…``), ``other`` when none did
    (unknown paths must not grow the label set)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"
