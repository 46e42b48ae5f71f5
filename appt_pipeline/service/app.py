"""The webhook intake HTTP service (SPEC §7, §11, §12 ``appt-pipeline serve``): FastAPI on uvicorn.

Endpoints (one per provider and workspace)::

    POST /webhooks/calendly/{workspace_id}   Calendly-Webhook-Signature: t=<unix>,v1=<hex>
    POST /webhooks/ghl/{workspace_id}        X-GHL-Signature (Ed25519) | x-wh-signature (legacy RSA)
    GET  /health                             200 {"status": "ok" | "degraded", "database", "webhook_keys", …} | 503
    GET  /metrics                            Prometheus text format (:mod:`appt_pipeline.service.metrics`)

and, behind workspace tokens (:mod:`appt_pipeline.service.access`, SPEC §10), the history API
(:mod:`appt_pipeline.service.history_api`), the timeline page (:mod:`appt_pipeline.service.timeline_page`) and
the login form (:mod:`appt_pipeline.service.web`). The rest of this doc is about the webhook intake.

Checks, in this order, each with its answer (JSON bodies; ``reason`` codes are safe to log):

1. body size: ``Content-Length`` above ``max_body_bytes`` (256 KiB), or a streamed body growing past
   it → **413** ``{"error": "body_too_large"}`` (the body is not read further);
2. ``Content-Type`` ``application/json`` or ``<type>/<subtype>+json`` (parameters allowed), else
   **415** ``{"error": "unsupported_media_type"}``;
3. workspace lookup (TTL-cached, :mod:`appt_pipeline.service.keys`) → **404** ``{"error": "unknown_workspace"}``;
4. signature on the RAW bytes (:mod:`appt_pipeline.domain.signatures`) → **401** ``{"error": <reason>}``
   (``no_key``, ``missing_signature``, ``malformed_signature``, ``bad_signature``, ``stale_timestamp``,
   ``legacy_signature_disabled``);
5. JSON decode (orjson) → **400** ``{"error": "invalid_json"}``;
6. staging (:mod:`appt_pipeline.domain.webhook_staging`) → **400** ``{"error": <reason>, "fields": [...]}``;
7. GHL only: body ``timestamp`` at most 5 min ahead and at most 24 h old (GHL's retries of a 429 keep the
   original timestamp); older only when its ``webhookId`` is already stored (then the duplicate answer of
   8., whatever its age) → else **401** ``{"error": "stale_timestamp"}`` (SPEC §7 revised); body
   ``locationId`` equal to the workspace's ``ghl_location_id`` when the workspace has one (a body without
   ``locationId`` is refused too) → else **403**
   ``{"error": "location_mismatch"}``;
8. durable insert by group commit (:mod:`appt_pipeline.service.writer`) →
   **200** ``{"ok": true, "duplicate": <bool>, "status": "pending" | "ignored"}`` — only after the
   commit (or when the dedupe key was already stored: ``duplicate`` true). A row PostgreSQL refuses
   is **400** ``{"error": "invalid_field"}`` (e.g. a NUL character) or **404** ``unknown_workspace``
   (deleted since it was cached); nothing is stored.

Database unavailable at lookup or insert: Calendly **503**, GHL **429** (GHL retries only on 429;
Calendly retries any non-2xx), both with ``Retry-After`` (seconds) and
``{"error": "database_unavailable"}``; a request waits at most ``pool_timeout_s`` for a connection.
A workspace whose stored secret cannot be decrypted or parsed is answered the same way (an operator
must fix it; the provider keeps retrying meanwhile). A bug answers **500** ``{"error": "internal_error"}``.
Other paths: ``{"error": "not_found"}`` (404) / ``method_not_allowed`` (405).

Nothing from bodies or signature headers is logged (SPEC §11): logs carry the provider, the
workspace id, reason codes and counts. FastAPI never parses the body: :class:`IntakeApp` answers the
two webhook routes straight from the ASGI scope (the raw stream is read by :class:`WebhookIntake`),
and the same routes declared on FastAPI — for the OpenAPI document (the fields staging reads, every
answer above) — call the same code.

Running it: ``appt-pipeline serve`` (uvicorn, lifespan), or any ASGI server::

    app = create_app(ServiceSettings(database_url=url, secret_key=key))
    with SimulatorServer(app) as server:      # tests: real HTTP on loopback
        httpx.post(f"{server.base_url}/webhooks/ghl/ws1", content=body, headers=...)
"""

import asyncio
import contextlib
import gc
import logging
import time
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import sqlalchemy as sa
from cachetools import TTLCache
from fastapi import FastAPI, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from appt_pipeline.domain.signatures import (
    CALENDLY_SIGNATURE_HEADER,
    GHL_EXPIRED,
    GHL_LEGACY_SIGNATURE_HEADER,
    GHL_SIGNATURE_HEADER,
    SignatureError,
    ghl_replay_verdict,
    verify_calendly,
    verify_ghl,
)
from appt_pipeline.domain.vocab import Provider, WebhookStatus
from appt_pipeline.domain.webhook_staging import WebhookPayloadError, stage_calendly, stage_ghl
from appt_pipeline.service.booking_api import router as booking_api_router
from appt_pipeline.service.capacity import router as capacity_router
from appt_pipeline.service.common import install_error_handlers
from appt_pipeline.service.db import Database, DatabaseUnavailable
from appt_pipeline.service.history_api import router as history_api_router
from appt_pipeline.service.keys import MAX_WORKSPACE_ID_CHARS, MISSING, WorkspaceDirectory
from appt_pipeline.service.metrics import BACKLOG_SQL, ServiceMetrics, route_label
from appt_pipeline.service.settings import ServiceSettings
from appt_pipeline.service.tasks_api import router as tasks_api_router
from appt_pipeline.service.timeline_page import router as timeline_router
from appt_pipeline.service.web import install_pages
from appt_pipeline.service.writer import GroupCommitWriter, RowRejected
from appt_pipeline.store.engine import get_engine
from appt_pipeline.store.tokens import TokenGrant
from appt_pipeline.store.webhook_events import DEDUPE_KEY_SEEN_SQL

log = logging.getLogger(__name__)

_CALENDLY_HEADER = CALENDLY_SIGNATURE_HEADER.lower()
_GHL_HEADER = GHL_SIGNATURE_HEADER.lower()
_GHL_LEGACY_HEADER = GHL_LEGACY_SIGNATURE_HEADER.lower()


# ------------------------------------------------------------------------------------------ service


class IntakeService:
    """The service's state in one event loop: pool (:attr:`db`), key cache (:attr:`directory`) and
    group-commit writer (:attr:`writer`).

    Started by the app's lifespan, or lazily by the first request when the server runs without
    lifespan events (e.g. :class:`appt_pipeline.sandbox.server.SimulatorServer`); in that case
    everything is closed when the loop shuts down. After a close the next start builds fresh
    objects, so one app can be served again (a new loop, a new pool).

    Raises:
        ServiceConfigError: from the constructor, for settings :meth:`ServiceSettings.validate` refuses.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        settings.validate()
        self.settings = settings
        self._conninfo = settings.conninfo()
        self.started = False
        self._starting: asyncio.Future[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        #: Prometheus metrics (``GET /metrics``); kept across restarts of the pool
        self.metrics = ServiceMetrics()
        self._build()

    def _build(self) -> None:
        settings = self.settings
        assert settings.secret_key is not None
        self.db = Database(self._conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                           timeout_s=settings.pool_timeout_s, connect_timeout_s=settings.connect_timeout_s,
                           on_unavailable=lambda reason: self.metrics.database_errors.labels(reason).inc())
        #: verified API tokens (SHA-256 digest → grant) reused for ``token_cache_ttl_s`` (access.authorize)
        self.token_grants: TTLCache[bytes, TokenGrant] = TTLCache(maxsize=settings.cache_max_entries,
                                                                  ttl=max(settings.token_cache_ttl_s, 1e-9))
        self.directory = WorkspaceDirectory(self.db, settings.secret_key, ttl_s=settings.cache_ttl_s,
                                            negative_ttl_s=settings.negative_cache_ttl_s,
                                            max_entries=settings.cache_max_entries)
        self.writer = GroupCommitWriter(self.db, max_rows=settings.flush_max_rows,
                                        in_flight=settings.flushes_in_flight,
                                        timeout_s=settings.write_timeout_s)
        self._closed = False
        self._sql_engine: sa.Engine | None = None

    def sql_engine(self) -> sa.Engine:
        """A SQLAlchemy engine of the app database for the booking route, whose work (the one write path, SPEC
        §8) is the pipelines' synchronous code run in threads; created on first use, pool of 5 + 10."""
        if self._sql_engine is None:
            assert self.settings.database_url is not None
            self._sql_engine = get_engine(self.settings.database_url)
        return self._sql_engine

    async def start(self) -> None:
        """Open the pool (without waiting for the database) and start the writer; idempotent, and safe
        when many first requests call it at once."""
        if self.started:
            return
        loop = asyncio.get_running_loop()
        if self._starting is not None and self._starting.get_loop() is loop:
            await asyncio.shield(self._starting)
            return
        self._starting = starting = loop.create_future()
        try:
            if self._closed:
                self._build()
            await self.db.open()
            self.writer.start()
            self._keeper = loop.create_task(self._keep(), name="appt-webhook-keeper")
            self.started = True
            log.info("webhook intake started (database %s)", self.settings.describe())
            starting.set_result(None)
        except BaseException as exc:
            starting.set_exception(exc if isinstance(exc, Exception) else RuntimeError("start cancelled"))
            starting.exception()  # retrieved: concurrent starters re-raise it
            raise
        finally:
            self._starting = None

    async def _keep(self) -> None:
        """Close everything when cancelled: by :meth:`close`, or by the loop shutting down."""
        try:
            await asyncio.Event().wait()
        finally:
            self.started = False
            self._closed = True
            await self.writer.stop()
            await self.db.close()

    async def close(self) -> None:
        """Finish running groups, stop the writer, close the pool (idempotent)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        self.started = False


# ---------------------------------------------------------------------------------------- responses


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


_ACCEPTED = {
    (dup, status): orjson.dumps({"ok": True, "duplicate": dup, "status": status})
    for dup in (False, True) for status in (WebhookStatus.PENDING.value, WebhookStatus.IGNORED.value)
}


class WebhookAccepted(BaseModel):
    """200: the delivery is durably stored (or was already)."""

    ok: Literal[True]
    duplicate: bool
    status: Literal["pending", "ignored"]


class WebhookError(BaseModel):
    """4xx/5xx: ``error`` is a reason code; ``fields`` names missing/invalid body fields (400 only)."""

    error: str
    fields: list[str] | None = None


class Health(BaseModel):
    """``GET /health``: ``database`` is ``ok`` when ``SELECT 1`` answers within 1 s; ``webhook_keys`` is
    ``degraded`` when some workspace stores a webhook key that cannot be used (wrong ``APPT_SECRET_KEY``,
    invalid public key), and ``broken_webhook_keys`` counts those workspaces per provider (no ids). ``status``:
    ``ok``, ``degraded`` (still 200: other workspaces' deliveries work) or ``unavailable`` (503)."""

    status: Literal["ok", "degraded", "unavailable"]
    database: Literal["ok", "unavailable"]
    webhook_keys: Literal["ok", "degraded", "unknown"]
    broken_webhook_keys: dict[str, int]


_RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _webhook_responses(provider: Provider) -> dict[int | str, dict[str, Any]]:
    unavailable = (
        {503: {"model": WebhookError, "headers": _RETRY_AFTER_HEADER,
               "description": "database unavailable (Calendly retries any non-2xx for 24 h)"}}
        if provider is Provider.CALENDLY else
        {429: {"model": WebhookError, "headers": _RETRY_AFTER_HEADER,
               "description": "database unavailable (GHL retries only on 429)"}}
    )
    ghl_only: dict[int | str, dict[str, Any]] = (
        {403: {"model": WebhookError, "description": "body `locationId` is not the workspace's GHL location"}}
        if provider is Provider.GHL else {}
    )
    return {
        200: {"model": WebhookAccepted, "description": "stored durably (`duplicate`: was already stored)"},
        400: {"model": WebhookError, "description": "`invalid_json`, `not_an_object`, `missing_fields`, "
                                                    "`invalid_field`"},
        401: {"model": WebhookError, "description": "signature or timestamp refused (`no_key`, "
              "`missing_signature`, `malformed_signature`, `bad_signature`, `stale_timestamp`, "
              "`legacy_signature_disabled`)"},
        **ghl_only,
        404: {"model": WebhookError, "description": "`unknown_workspace` (or no such route)"},
        413: {"model": WebhookError, "description": "`body_too_large`: over 256 KiB"},
        415: {"model": WebhookError, "description": "`unsupported_media_type`: not application/json or */*+json"},
        500: {"model": WebhookError, "description": "`internal_error` (a bug; nothing stored)"},
        **unavailable,
    }


_TEXT: dict[str, Any] = {"type": "string", "pattern": "\\S", "maxLength": 2048}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}

#: Calendly envelope (docs/providers.md §2.6): what staging reads; more fields may be present (ignored).
CALENDLY_BODY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["event", "payload"], "additionalProperties": True,
    "properties": {
        "event": {**_TEXT, "description": "`invitee.created`, `invitee.canceled`, `invitee_no_show.created` and "
                  "`invitee_no_show.deleted` are applied; any other event is stored as `ignored`"},
        "created_at": _TIME,
        "created_by": {"type": "string"},
        "payload": {
            "type": "object", "additionalProperties": True,
            "description": "the Invitee: its fields at the root (current form) or under `invitee` (older form); "
                           "applied events need `uri` and `status` (else 400 `missing_fields`)",
            "properties": {"uri": _TEXT, "status": _TEXT, "event": _TEXT, "updated_at": _TIME, "created_at": _TIME,
                           "rescheduled": {"type": "boolean"}, "timezone": _TEXT,
                           "scheduled_event": {"type": "object", "additionalProperties": True}},
        },
    },
}

#: GHL appointment webhook (docs/providers.md §1.5): what staging reads; more fields may be present (ignored).
GHL_BODY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "webhookId", "timestamp"], "additionalProperties": True,
    "properties": {
        "type": {**_TEXT, "description": "`AppointmentCreate`, `AppointmentUpdate` and `AppointmentDelete` are "
                 "applied (they need `appointment.id`); any other type is stored as `ignored`"},
        "locationId": {**_TEXT, "description": "must equal the workspace's GHL location when it has one "
                       "(missing or other: 403)"},
        "webhookId": {**_TEXT, "description": "deduplication key"},
        "timestamp": {"type": ["string", "integer"], "description": "ISO 8601 or epoch s/ms; at most 5 min "
                      "ahead of the service's clock and at most 24 h old, older only for a `webhookId` already "
                      "stored (answered as a duplicate); else 401 `stale_timestamp`"},
        "appointment": {"type": "object", "additionalProperties": True,
                        "properties": {"id": _TEXT, "calendarId": _TEXT, "contactId": _TEXT,
                                       "appointmentStatus": _TEXT, "startTime": _TIME, "endTime": _TIME,
                                       "dateAdded": _TIME, "dateUpdated": _TIME}},
    },
}


def _webhook_openapi(provider: Provider) -> dict[str, Any]:
    if provider is Provider.CALENDLY:
        headers = [(CALENDLY_SIGNATURE_HEADER, "`t=<unix seconds>,v1=<hex HMAC-SHA256(signing key, t + '.' + "
                    "raw body)>`; |now - t| <= 180 s (docs/providers.md §2.6)")]
        body = ("Calendly webhook envelope `{event, created_at, created_by, payload}` (docs/providers.md §2.6). "
                "Verified on the raw bytes before parsing; only whitelisted, PII-free fields are stored (SPEC §7).")
        schema = CALENDLY_BODY_SCHEMA
    else:
        headers = [(GHL_SIGNATURE_HEADER, "base64 Ed25519 signature of the raw body (docs/providers.md §1.5)"),
                   (GHL_LEGACY_SIGNATURE_HEADER, "legacy base64 RSA-SHA256 signature; accepted only when the "
                    "workspace has a legacy public key")]
        body = ("GHL webhook `{type, locationId, webhookId, timestamp, appointment: {...}}` (docs/providers.md §1.5). "
                "Verified on the raw bytes before parsing; `timestamp` at most 24 h old (older: only a stored "
                "`webhookId`, as a duplicate); deduplicated on `webhookId` (kept 30 days).")
        schema = GHL_BODY_SCHEMA
    return {
        "parameters": [{"name": name, "in": "header", "required": False, "description": text,
                        "schema": {"type": "string"}} for name, text in headers],
        "requestBody": {"required": True, "description": body, "content": {"application/json": {"schema": schema}}},
    }


# -------------------------------------------------------------------------------------------- intake


def _is_json_media_type(value: str | None) -> bool:
    """``application/json`` or ``<type>/<subtype>+json``, parameters allowed (case-insensitive)."""
    if not value:
        return False
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return True
    kind, sep, subtype = media.partition("/")
    return bool(sep and kind and subtype.endswith("+json") and len(subtype) > 5 and "/" not in subtype
                and " " not in media)


_JSON_CT = (b"content-type", b"application/json")

#: An answer: HTTP status, JSON body, extra headers.
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


class _Disconnected(Exception):
    """The client went away while sending its body."""


class WebhookIntake:
    """The per-request pipeline of the module doc, on raw ASGI values (no Starlette objects on the hot path).

    :meth:`handle` never raises for a request: every outcome is a :data:`Reply`. Used by the fast path
    of :class:`IntakeApp` and by the declared FastAPI routes alike, so both answer identically.
    """

    def __init__(self, service: IntakeService) -> None:
        self.service = service
        self.limit = service.settings.max_body_bytes
        self._retry_after = [(b"retry-after", str(service.settings.retry_after_s).encode())]
        self._unavailable = orjson.dumps({"error": "database_unavailable"})
        self._key_invalid = orjson.dumps({"error": "webhook_key_invalid"})

    def _error(self, status: int, reason: str, fields: tuple[str, ...] | None = None) -> Reply:
        body = orjson.dumps({"error": reason, "fields": list(fields)} if fields else {"error": reason})
        return status, body, []

    def _key_invalid_reply(self, provider: Provider) -> Reply:
        """The stored webhook key of ``provider`` cannot be used: an honest error with the status that makes the
        provider retry (Calendly any non-2xx for 24 h, GHL only 429) while an operator fixes the key."""
        return (503 if provider is Provider.CALENDLY else 429), self._key_invalid, self._retry_after

    def _unavailable_reply(self, provider: Provider) -> Reply:
        return (503 if provider is Provider.CALENDLY else 429), self._unavailable, self._retry_after

    async def _read_body(self, receive: Any) -> bytes | None:
        """The raw body, or ``None`` as soon as it grows past the limit (the rest is not read)."""
        chunks: list[bytes] = []
        size = 0
        limit = self.limit
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def handle(self, provider: Provider, workspace_id: str, headers: Any, receive: Any) -> Reply:
        """Answer one delivery. ``headers``: the ASGI header list (lower-case byte names); ``receive``: the
        ASGI receive callable the body is read from."""
        reason = None
        try:
            reply = await self._handle(provider, workspace_id, headers, receive)
        except _Reject as reject:
            log.info("%s webhook for workspace %r rejected: %s (%d)", provider.value, workspace_id, reject.reason,
                     reject.reply[0])
            reply, reason = reject.reply, reject.reason
        except _Disconnected:
            reply = 400, b'{"error":"client_disconnected"}', []
        except Exception as exc:  # a bug: log where, never the message (it may quote the body)
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("%s webhook for workspace %r failed: %s at %s:%s", provider.value, workspace_id,
                      type(exc).__name__, frame.filename, frame.lineno)
            reply = 500, b'{"error":"internal_error"}', []
        self.service.metrics.delivery(provider.value, reply[0], reason)
        return reply

    async def _handle(self, provider: Provider, workspace_id: str, headers: Any, receive: Any) -> Reply:
        service = self.service
        sig_name = _CALENDLY_HEADER_B if provider is Provider.CALENDLY else _GHL_HEADER_B
        length = content_type = signature = legacy = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value if content_type is None else content_type
            elif name == sig_name:
                signature = value if signature is None else signature
            elif name == _GHL_LEGACY_HEADER_B:
                legacy = value if legacy is None else legacy
        # 1. size
        if length is not None and length.isdigit() and int(length) > self.limit:
            raise _Reject(self._error(413, "body_too_large"), "body_too_large")
        body = await self._read_body(receive)
        if body is None:
            raise _Reject(self._error(413, "body_too_large"), "body_too_large")
        # 2. media type
        if content_type is None or not _is_json_media_type(content_type.decode("latin-1")):
            raise _Reject(self._error(415, "unsupported_media_type"), "unsupported_media_type")
        # 3. workspace
        if not service.started:
            await service.start()
        keys = service.directory.cached(workspace_id)
        if keys is MISSING:
            try:
                keys = await service.directory.get(workspace_id)
            except DatabaseUnavailable as exc:
                raise _Reject(self._unavailable_reply(provider), f"database_unavailable:{exc.reason}") from None
        if keys is None:
            raise _Reject(self._error(404, "unknown_workspace"), "unknown_workspace")
        broken = keys.config_error(provider)
        if broken is not None:  # this provider's stored key is unusable; the other provider is unaffected
            raise _Reject(self._key_invalid_reply(provider), broken)
        # 4. signature on the raw bytes
        try:
            if provider is Provider.CALENDLY:
                verify_calendly(signature.decode("latin-1") if signature is not None else None, body,
                                keys.calendly_signing_key, now=time.time())
            else:
                verify_ghl(body, signature=signature.decode("latin-1") if signature is not None else None,
                           legacy_signature=legacy.decode("latin-1") if legacy is not None else None, keys=keys.ghl)
        except SignatureError as exc:
            raise _Reject(self._error(401, exc.reason), exc.reason) from None
        # 5. JSON
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Reject(self._error(400, "invalid_json"), "invalid_json") from None
        # 6. staging (whitelist, dedupe key)
        try:
            if provider is Provider.CALENDLY:
                staged = stage_calendly(data, workspace_id=workspace_id)
            else:
                staged = stage_ghl(data, workspace_id=workspace_id)
        except WebhookPayloadError as exc:
            raise _Reject(self._error(400, exc.reason, exc.fields), f"{exc.reason} {','.join(exc.fields)}") from None
        # 7. GHL replay window and location
        if provider is Provider.GHL:
            assert staged.sent_at is not None  # stage_ghl requires the timestamp
            try:
                verdict = ghl_replay_verdict(staged.sent_at, now=datetime.now(UTC))
            except SignatureError as exc:
                raise _Reject(self._error(401, exc.reason), exc.reason) from None
            location = data.get("locationId")
            given = (str(location).strip() if isinstance(location, str | int) and not isinstance(location, bool)
                     else "")
            # a workspace bound to a GHL location only takes deliveries that name it: a body without
            # `locationId` cannot prove it is for this workspace (GHL always sends it)
            if keys.ghl_location_id and given != keys.ghl_location_id:
                raise _Reject(self._error(403, "location_mismatch"), "location_mismatch")
            if verdict == GHL_EXPIRED:  # older than 24 h: only a redelivery of a stored webhookId is answered 2xx
                if not await self._seen(provider, staged.dedupe_key):
                    raise _Reject(self._error(401, "stale_timestamp"), "stale_timestamp")
                return 200, _ACCEPTED[(True, staged.status)], []
        # 8. durable insert (group commit)
        try:
            inserted = await service.writer.submit(workspace_id, staged)
        except DatabaseUnavailable as exc:
            raise _Reject(self._unavailable_reply(provider), f"database_unavailable:{exc.reason}") from None
        except RowRejected as exc:
            if exc.reason == "unknown_workspace":
                service.directory.invalidate(workspace_id)
                raise _Reject(self._error(404, "unknown_workspace"), "unknown_workspace") from None
            raise _Reject(self._error(400, exc.reason), exc.reason) from None
        return 200, _ACCEPTED[(not inserted, staged.status)], []


    async def _seen(self, provider: Provider, dedupe_key: str) -> bool:
        """Is ``dedupe_key`` stored? (kept at least 30 days, SPEC §7)"""

        async def exists(conn: Any) -> bool:
            cur = await conn.execute(DEDUPE_KEY_SEEN_SQL, {"key": dedupe_key})
            row = await cur.fetchone()
            return bool(row and row[0])

        try:
            return await self.service.db.run(exists)
        except DatabaseUnavailable as exc:
            raise _Reject(self._unavailable_reply(provider), f"database_unavailable:{exc.reason}") from None


class _Reject(Exception):
    def __init__(self, reply: Reply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


_CALENDLY_HEADER_B = _CALENDLY_HEADER.encode()
_GHL_HEADER_B = _GHL_HEADER.encode()
_GHL_LEGACY_HEADER_B = _GHL_LEGACY_HEADER.encode()
_CALENDLY_PREFIX = "/webhooks/calendly/"
_CALENDLY_ROUTE = "/webhooks/calendly/{workspace_id}"
_GHL_ROUTE = "/webhooks/ghl/{workspace_id}"
_GHL_PREFIX = "/webhooks/ghl/"


class IntakeApp(FastAPI):
    """The FastAPI app with a fast path: ``POST /webhooks/{calendly|ghl}/{workspace_id}`` is answered
    straight from the ASGI scope by :class:`WebhookIntake`, without FastAPI's middleware, routing and
    dependency layers (they cost more CPU than the whole intake on a small machine). Everything else —
    ``/health``, ``/openapi.json``, ``/docs``, unknown routes, other methods — goes through FastAPI. The
    webhook routes are also declared on FastAPI (OpenAPI document; identical answers)."""

    intake: WebhookIntake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        if scope["method"] == "POST":
            path: str = scope["path"]
            provider = workspace_id = None
            if path.startswith(_CALENDLY_PREFIX):
                provider, workspace_id = Provider.CALENDLY, path[len(_CALENDLY_PREFIX):]
            elif path.startswith(_GHL_PREFIX):
                provider, workspace_id = Provider.GHL, path[len(_GHL_PREFIX):]
            if provider is not None and workspace_id and "/" not in workspace_id:
                status, body, extra = await self.intake.handle(provider, workspace_id, scope["headers"], receive)
                await send({"type": "http.response.start", "status": status,
                            "headers": [_JSON_CT, (b"content-length", str(len(body)).encode()), *extra]})
                await send({"type": "http.response.body", "body": body})
                route = _CALENDLY_ROUTE if provider is Provider.CALENDLY else _GHL_ROUTE
                self.intake.service.metrics.latency.labels("POST", route).observe(time.perf_counter() - started)
                return
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.intake.service.metrics.latency.labels(scope["method"], route_label(scope)).observe(
                time.perf_counter() - started)


def _response(reply: Reply) -> Response:
    status, body, extra = reply
    return Response(body, status_code=status, media_type="application/json",
                    headers={k.decode(): v.decode() for k, v in extra})


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The intake ASGI app (see the module doc for endpoints and answers): an :class:`IntakeApp`.

    Args:
        settings: configuration; default ``ServiceSettings()`` (from the environment).

    Raises:
        ServiceConfigError: no database URL, a non-PostgreSQL URL, a missing/invalid ``APPT_SECRET_KEY``,
            or limits out of range — before anything is served.
    """
    service = IntakeService(settings or ServiceSettings())
    intake = WebhookIntake(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if service.settings.gc_freeze:
            # everything alive now (modules, app, pool) is permanent: full collections later only scan
            # request garbage, which keeps the tail latency flat (a full scan takes tens of ms here)
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await service.close()

    app = IntakeApp(
        title="appt-pipeline service",
        version="1",
        summary="Signed Calendly and GoHighLevel webhook deliveries into the staging table (SPEC §7); a lead's "
                "appointment history and booking status behind workspace tokens (SPEC §10).",
        lifespan=lifespan,
        redoc_url=None,
        # never answer with a redirect: Starlette builds its slash redirect from the request's Host header,
        # which an attacker chooses (an open redirect to their host); an unknown path is a plain 404
        redirect_slashes=False,
    )
    app.intake = intake
    app.state.service = service
    # SPEC §10: the history API and the pages, behind workspace tokens (service.access)
    install_error_handlers(app)
    app.include_router(history_api_router)
    app.include_router(tasks_api_router)
    app.include_router(booking_api_router)
    app.include_router(timeline_router)
    app.include_router(capacity_router)
    install_pages(app)

    WorkspaceId = Annotated[str, Path(min_length=1, max_length=MAX_WORKSPACE_ID_CHARS,
                                      description="workspaces.id (SPEC §1)")]

    @app.post("/webhooks/calendly/{workspace_id}", response_class=Response,
              responses=_webhook_responses(Provider.CALENDLY), openapi_extra=_webhook_openapi(Provider.CALENDLY),
              summary="Receive a Calendly webhook delivery (SPEC §7)", tags=["webhooks"])
    async def calendly_webhook(workspace_id: WorkspaceId, request: Request) -> Response:
        """Verify ``Calendly-Webhook-Signature`` on the raw body, stage the whitelisted fields, store durably."""
        return _response(await intake.handle(Provider.CALENDLY, workspace_id, request.scope["headers"],
                                             request.receive))

    @app.post("/webhooks/ghl/{workspace_id}", response_class=Response,
              responses=_webhook_responses(Provider.GHL), openapi_extra=_webhook_openapi(Provider.GHL),
              summary="Receive a GoHighLevel webhook delivery (SPEC §7)", tags=["webhooks"])
    async def ghl_webhook(workspace_id: WorkspaceId, request: Request) -> Response:
        """Verify ``X-GHL-Signature`` (or the legacy ``x-wh-signature`` when enabled) on the raw body, check
        ``timestamp`` and ``locationId``, stage the whitelisted fields, store durably."""
        return _response(await intake.handle(Provider.GHL, workspace_id, request.scope["headers"], request.receive))

    @app.head("/health", response_class=Response, include_in_schema=False)  # load balancers probe with HEAD
    @app.get("/health", response_class=Response, tags=["operations"], summary="Database reachability",
             responses={200: {"model": Health, "description": "database reachable"},
                        503: {"model": Health, "description": "database unreachable"}})
    async def health() -> Response:
        """200 when ``SELECT 1`` answers within 1 s, else 503; with the webhook keys' state (:class:`Health`)."""
        if not service.started:
            await service.start()
        if not await service.db.ping(timeout_s=1.0):
            return _json(503, {"status": "unavailable", "database": "unavailable", "webhook_keys": "unknown",
                               "broken_webhook_keys": {}})
        try:
            keys = await service.directory.key_health()
        except DatabaseUnavailable:
            return _json(503, {"status": "unavailable", "database": "unavailable", "webhook_keys": "unknown",
                               "broken_webhook_keys": {}})
        broken = {p.value: n for p, n in keys.broken.items() if n}
        return _json(200, {"status": "ok" if keys.ok else "degraded", "database": "ok",
                           "webhook_keys": "ok" if keys.ok else "degraded", "broken_webhook_keys": broken})

    @app.get("/metrics", response_class=Response, tags=["operations"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {}}, "description": "prometheus text exposition format"}})
    async def metrics() -> Response:
        """Prometheus metrics (:mod:`appt_pipeline.service.metrics`): deliveries by provider and status, signature
        failures, database errors, request latency, and the staging backlog per workspace read now (unavailable
        database: the last values and ``appt_webhook_staging_scrape_ok 0``). Open like ``/health``: counts, ids
        and reason codes only."""
        if not service.started:
            await service.start()

        async def backlog() -> list[tuple[str, int, datetime]] | None:
            async def read(conn: Any) -> list[tuple[str, int, datetime]]:
                cur = await conn.execute(BACKLOG_SQL)
                return [(ws, int(n), oldest) for ws, n, oldest in await cur.fetchall()]

            try:
                return await service.db.run(read, timeout_s=1.0, attempts=1)
            except DatabaseUnavailable:
                return None

        body, content_type = await service.metrics.render(backlog)
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _json(exc.status_code, {"error": reason}, headers=getattr(exc, "headers", None))

    return app


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` / multi-worker serving: settings from the environment."""
    return create_app(ServiceSettings())
