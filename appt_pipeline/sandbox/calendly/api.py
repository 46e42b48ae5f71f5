"""The Calendly API v2 routes the simulator serves (paths and shapes in the package docstring)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.responses import Response

from appt_pipeline.sandbox.calendly.model import (
    _EMAIL,
    API,
    MAX_AVAILABLE_RANGE,
    _denied,
    _Event,
    _EventType,
    _invalid,
    _not_found,
    _tail,
    _User,
    _WebhookSub,
)
from appt_pipeline.sandbox.common import (
    ApiError,
    as_utc,
    iso_us_z,
    keyset_page,
    parse_iso,
)

if TYPE_CHECKING:
    from appt_pipeline.sandbox.calendly.simulator import CalendlySimulator


def add_api_routes(sim: CalendlySimulator, app: FastAPI) -> None:
    """Register the provider API routes of ``sim`` on ``app`` (see the package docstring)."""

    def me(request: Request) -> _User:
        return request.state.principal

    def can_see(caller: _User, user_uri: str) -> bool:
        if caller.uri == user_uri:
            return True
        other = sim._users.get(user_uri)
        return bool(other and caller.is_admin and other.org_uri == caller.org_uri)

    def count_param(request: Request) -> int:
        raw = request.query_params.get("count", "20")
        try:
            count = int(raw)
        except ValueError:
            raise _invalid(("count", "must be an integer")) from None
        if not 1 <= count <= 100:
            raise _invalid(("count", "must be between 1 and 100"))
        return count

    def time_param(request: Request, name: str, required: bool = False) -> datetime | None:
        raw = request.query_params.get(name)
        if not raw:
            if required:
                raise _invalid((name, "is required"))
            return None
        try:
            return as_utc(parse_iso(raw))
        except ValueError:
            raise _invalid((name, "must be a valid ISO 8601 date-time, e.g. 2020-01-02T03:04:05.678123Z")) from None

    def scope(request: Request) -> set[str]:
        """User URIs whose items a list request covers (``user`` and/or ``organization``)."""
        caller = me(request)
        user_uri, org_uri = request.query_params.get("user"), request.query_params.get("organization")
        if not user_uri and not org_uri:
            raise _invalid(
                ("organization", "is required if user is not present"),
                ("user", "is required if organization is not present"),
            )
        if org_uri and org_uri != caller.org_uri:
            raise _denied()
        if user_uri:
            target = sim._users.get(user_uri)
            if target is None:
                raise _invalid(("user", "must be a valid user URI"))
            if not can_see(caller, user_uri) or (org_uri and target.org_uri != org_uri):
                raise _denied()
            return {user_uri}
        if not caller.is_admin:
            raise _denied("This user is not authorized to perform this action")
        return {u.uri for u in sim._users.values() if u.org_uri == org_uri}

    def page_json(request: Request, page: Any, path: str, count: int) -> dict[str, Any]:
        params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("page_token", "count")]
        params.insert(0, ("count", str(count)))

        def link(token: str | None) -> str | None:
            return f"{API}{path}?{urlencode([*params, ('page_token', token)])}" if token else None

        return {
            "count": len(page.items),
            "next_page": link(page.next_token),
            "previous_page": link(page.previous_token),
            "next_page_token": page.next_token,
            "previous_page_token": page.previous_token,
        }

    def paginate(request: Request, items: list[Any], key: Any, path: str, descending: bool) -> tuple[Any, int]:
        count = count_param(request)
        try:
            page = keyset_page(items, key, count, request.query_params.get("page_token"), descending)
        except ValueError:
            raise _invalid(("page_token", "is invalid")) from None
        return page, count

    def visible_event(request: Request, uuid: str) -> _Event:
        event = sim._events.get(uuid)
        if event is None:
            raise _not_found()
        if not can_see(me(request), event.host_uri):
            raise _denied()
        return event

    def visible_type(request: Request, uuid: str) -> _EventType:
        et = sim._types.get(uuid)
        if et is None:
            raise _not_found()
        if not can_see(me(request), et.owner_uri):
            raise _denied()
        return et

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise _invalid(("body", "must be a JSON object")) from None
        if not isinstance(data, dict):
            raise _invalid(("body", "must be a JSON object"))
        return data

    # ---- users

    @app.get("/users/me")
    async def users_me(request: Request) -> dict[str, Any]:
        """CAL-SPEC ``GET /users/me`` → ``{resource: User}``."""
        with sim._lock:
            return {"resource": sim._user_json(me(request))}

    @app.get("/users/{uuid}")
    async def get_user(uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            user = sim._users.get(f"{API}/users/{uuid}")
            if user is None:
                raise _not_found()
            if not (user.uri == me(request).uri or user.org_uri == me(request).org_uri):
                raise _denied()
            return {"resource": sim._user_json(user)}

    # ---- scheduled events

    @app.get("/scheduled_events")
    async def list_events(request: Request) -> dict[str, Any]:
        """CAL-SPEC ``GET /scheduled_events``: scope, ``invitee_email``, ``status``, start window
        (``min_start_time`` inclusive, ``max_start_time`` exclusive), ``sort``, keyset paging."""
        q = request.query_params
        status = q.get("status")
        if status and status not in ("active", "canceled"):
            raise _invalid(("status", "must be one of active, canceled"))
        sort = q.get("sort", "start_time:asc")
        if sort not in ("start_time:asc", "start_time:desc"):
            raise _invalid(("sort", "must be start_time:asc or start_time:desc"))
        lo, hi = time_param(request, "min_start_time"), time_param(request, "max_start_time")
        email = (q.get("invitee_email") or "").strip().lower()
        with sim._lock:
            hosts = scope(request)
            items = [
                e
                for e in sim._events.values()
                if e.host_uri in hosts
                and (not status or e.status == status)
                and (lo is None or e.start >= lo)
                and (hi is None or e.start < hi)
                and (not email or any(sim._invitees[i].email.lower() == email for i in e.invitees))
            ]
            page, count = paginate(
                request, items, lambda e: [iso_us_z(e.start), e.uuid], "/scheduled_events", sort.endswith("desc")
            )
            return {
                "collection": [sim._event_json(e) for e in page.items],
                "pagination": page_json(request, page, "/scheduled_events", count),
            }

    @app.get("/scheduled_events/{uuid}")
    async def get_event(uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            return {"resource": sim._event_json(visible_event(request, uuid))}

    @app.get("/scheduled_events/{uuid}/invitees")
    async def list_invitees(uuid: str, request: Request) -> dict[str, Any]:
        """CAL-SPEC ``GET /scheduled_events/{uuid}/invitees``: ``status``, ``email``,
        ``sort`` (``created_at:asc`` default), keyset paging."""
        q = request.query_params
        status = q.get("status")
        if status and status not in ("active", "canceled"):
            raise _invalid(("status", "must be one of active, canceled"))
        sort = q.get("sort", "created_at:asc")
        if sort not in ("created_at:asc", "created_at:desc"):
            raise _invalid(("sort", "must be created_at:asc or created_at:desc"))
        email = (q.get("email") or "").strip().lower()
        with sim._lock:
            event = visible_event(request, uuid)
            items = [
                sim._invitees[i]
                for i in event.invitees
                if (not status or sim._invitees[i].status == status)
                and (not email or sim._invitees[i].email.lower() == email)
            ]
            path = f"/scheduled_events/{uuid}/invitees"
            page, count = paginate(
                request, items, lambda i: [iso_us_z(i.created_at), i.uuid], path, sort.endswith("desc")
            )
            return {
                "collection": [sim._invitee_json(i) for i in page.items],
                "pagination": page_json(request, page, path, count),
            }

    @app.get("/scheduled_events/{event_uuid}/invitees/{invitee_uuid}")
    async def get_invitee(event_uuid: str, invitee_uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            event = visible_event(request, event_uuid)
            if invitee_uuid not in event.invitees:
                raise _not_found()
            return {"resource": sim._invitee_json(sim._invitees[invitee_uuid])}

    @app.post("/scheduled_events/{uuid}/cancellation", status_code=201)
    async def cancel_event(uuid: str, request: Request) -> dict[str, Any]:
        """CAL-SPEC cancellation: 201 ``{resource: Cancellation}``; 403 when already canceled or past."""
        raw = await request.body()
        body = await json_body(request) if raw else {}
        with sim._lock:
            event = visible_event(request, uuid)
            if event.status == "canceled":
                raise _denied("Event is already canceled")
            if event.end <= sim.now():
                raise _denied("Event in the past")
            result = sim.cancel_event(
                event.uri, reason=str(body.get("reason") or ""), canceler_type="host", canceled_by=me(request).name
            )
            return {"resource": result["cancellation"]}

    # ---- event types

    @app.get("/event_types")
    async def list_types(request: Request) -> dict[str, Any]:
        """CAL-SPEC ``GET /event_types``: ``user``/``organization``, ``active``, ``sort`` by name."""
        q = request.query_params
        sort = q.get("sort", "name:asc")
        if sort not in ("name:asc", "name:desc"):
            raise _invalid(("sort", "must be name:asc or name:desc"))
        active = q.get("active")
        if active not in (None, "true", "false"):
            raise _invalid(("active", "must be true or false"))
        with sim._lock:
            owners = scope(request)
            items = [
                t
                for t in sim._types.values()
                if t.owner_uri in owners and (active is None or t.active == (active == "true"))
            ]
            page, count = paginate(
                request, items, lambda t: [t.name.lower(), t.uuid], "/event_types", sort.endswith("desc")
            )
            return {
                "collection": [sim._type_json(t) for t in page.items],
                "pagination": page_json(request, page, "/event_types", count),
            }

    @app.get("/event_types/{uuid}")
    async def get_type(uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            return {"resource": sim._type_json(visible_type(request, uuid))}

    @app.get("/event_type_available_times")
    async def available_times(request: Request) -> dict[str, Any]:
        """Open slots of an event type in ``[start_time, end_time)``: range ≤ 7 days, start in
        the future, not paginated, booked slots absent (CAL-SPEC)."""
        et_ref = request.query_params.get("event_type")
        if not et_ref:
            raise _invalid(("event_type", "is required"))
        start = time_param(request, "start_time", required=True)
        end = time_param(request, "end_time", required=True)
        assert start is not None and end is not None
        if start < sim.now():
            raise _invalid(("start_time", "must be in the future"))
        if end <= start:
            raise _invalid(("end_time", "must be after start_time"))
        if end - start > MAX_AVAILABLE_RANGE:
            raise _invalid(("end_time", "date range can be no greater than 1 week (7 days)"))
        with sim._lock:
            et = visible_type(request, _tail(et_ref))
            owner = sim._users[et.owner_uri]
            collection = [
                {
                    "status": "available",
                    "invitees_remaining": left,
                    "start_time": iso_us_z(slot),
                    "scheduling_url": (
                        f"https://calendly.com/{owner.slug}/{et.slug}/{slot.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                        f"?month={slot.strftime('%Y-%m')}&date={slot.strftime('%Y-%m-%d')}"
                    ),
                }
                for slot, left in sim._available(et, start, end)
            ]
            return {"collection": collection}

    # ---- booking

    @app.post("/invitees", status_code=201)
    async def create_invitee(request: Request) -> dict[str, Any]:
        """Create Event Invitee (release note 2025-10-15): 201 ``{resource: Invitee}``."""
        body = await json_body(request)
        problems: list[tuple[str, str]] = []
        if not body.get("event_type"):
            problems.append(("event_type", "is required"))
        if not body.get("start_time"):
            problems.append(("start_time", "is required"))
        inv = body.get("invitee")
        if not isinstance(inv, dict):
            problems.append(("invitee", "is required"))
            inv = {}
        else:
            if not inv.get("email"):
                problems.append(("invitee.email", "is required"))
            elif not _EMAIL.match(str(inv["email"])):
                problems.append(("invitee.email", "is invalid"))
            if not inv.get("timezone"):
                problems.append(("invitee.timezone", "is required"))
            else:
                try:
                    ZoneInfo(str(inv["timezone"]))
                except (ZoneInfoNotFoundError, ValueError):
                    problems.append(("invitee.timezone", "is invalid"))
            if not (inv.get("name") or inv.get("first_name")):
                problems.append(("invitee.name", "name or first_name is required"))
        guests = body.get("event_guests") or []
        if not isinstance(guests, list) or len(guests) > 10:
            problems.append(("event_guests", "must be a list of at most 10 e-mail addresses"))
        if problems:
            raise _invalid(*problems)
        try:
            start = as_utc(parse_iso(str(body["start_time"])))
        except ValueError:
            raise _invalid(("start_time", "must be a valid ISO 8601 date-time")) from None
        with sim._lock:
            et = visible_type(request, _tail(str(body["event_type"])))
            if not et.active:
                raise _invalid(("event_type", "is not active"))
            sim._check_bookable(et, start)
            invitee = sim._book(
                et,
                start,
                str(inv["email"]),
                inv.get("name"),
                str(inv["timezone"]),
                first_name=inv.get("first_name"),
                last_name=inv.get("last_name"),
                questions=body.get("questions_and_answers") or [],
                tracking=body.get("tracking"),
                text_reminder_number=inv.get("text_reminder_number"),
                guests=[str(g) for g in guests],
                location=body.get("location"),
                scheduling_method="instant_book",
                scheduled_by=me(request).uri,
            )
            return {"resource": sim._invitee_json(invitee)}

    # ---- no-shows

    @app.post("/invitee_no_shows", status_code=201)
    async def create_no_show(request: Request) -> dict[str, Any]:
        body = await json_body(request)
        ref = body.get("invitee")
        if not ref:
            raise _invalid(("invitee", "is required"))
        with sim._lock:
            inv = sim._invitees.get(_tail(str(ref)))
            if inv is None:
                raise _not_found()
            visible_event(request, inv.event_uuid)
            if inv.no_show:
                raise ApiError(409, {"title": "Already Exists", "message": "The invitee is already a no-show."})
            record = sim.mark_no_show(inv.uri)["no_show"]
            return {"resource": {**record, "invitee": inv.uri}}

    @app.get("/invitee_no_shows/{uuid}")
    async def get_no_show(uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            inv_uuid = sim._no_shows.get(uuid)
            if inv_uuid is None:
                raise _not_found()
            inv = sim._invitees[inv_uuid]
            visible_event(request, inv.event_uuid)
            return {"resource": {**(inv.no_show or {}), "invitee": inv.uri}}

    @app.delete("/invitee_no_shows/{uuid}", status_code=204)
    async def delete_no_show(uuid: str, request: Request) -> Response:
        with sim._lock:
            inv_uuid = sim._no_shows.get(uuid)
            if inv_uuid is None:
                raise _not_found()
            inv = sim._invitees[inv_uuid]
            visible_event(request, inv.event_uuid)
            sim.unmark_no_show(inv.uri)
        return Response(status_code=204)

    # ---- webhook subscriptions

    def visible_sub(request: Request, uuid: str) -> _WebhookSub:
        sub = sim._webhook_subs.get(uuid)
        caller = me(request)
        if sub is None or sub.organization != caller.org_uri:
            raise _not_found()
        if sub.scope == "organization" and not caller.is_admin:
            raise _denied()
        if sub.scope == "user" and not can_see(caller, sub.user or ""):
            raise _denied()
        return sub

    @app.post("/webhook_subscriptions", status_code=201)
    async def create_webhook(request: Request) -> dict[str, Any]:
        """CAL-SPEC create: 201 ``{resource: WebhookSubscription}`` (+ ``signing_key``, simulator
        extension); 400 invalid, 403 not allowed, 409 ``Hook with this url already exists``."""
        body = await json_body(request)
        caller = me(request)
        with sim._lock:
            org, scope, user = body.get("organization"), body.get("scope"), body.get("user")
            if isinstance(org, str) and org and org != caller.org_uri:
                raise _denied()
            if scope == "organization" and not caller.is_admin:
                raise _denied("This user is not authorized to perform this action")
            if scope == "user" and isinstance(user, str) and user in sim._users and not can_see(caller, user):
                raise _denied()
            sub = sim._new_webhook_sub(
                body.get("url"), body.get("events"), org, scope, user, body.get("signing_key"), caller.uri
            )
            return {"resource": sim._webhook_sub_json(sub, with_key=True)}

    @app.get("/webhook_subscriptions")
    async def list_webhooks(request: Request) -> dict[str, Any]:
        """CAL-SPEC list: ``organization`` and ``scope`` required, ``user`` when ``scope=user``;
        ``sort`` ``created_at:asc`` (default) / ``:desc``; keyset paging."""
        q = request.query_params
        org, scope, user = q.get("organization"), q.get("scope"), q.get("user")
        problems: list[tuple[str, str]] = []
        if not org:
            problems.append(("organization", "is required"))
        if scope not in ("organization", "user", "group"):
            problems.append(("scope", "must be one of organization, user, group"))
        if scope == "user" and not user:
            problems.append(("user", "is required when scope is user"))
        sort = q.get("sort", "created_at:asc")
        if sort not in ("created_at:asc", "created_at:desc"):
            problems.append(("sort", "must be created_at:asc or created_at:desc"))
        if problems:
            raise _invalid(*problems)
        caller = me(request)
        with sim._lock:
            if org != caller.org_uri:
                raise _denied()
            if scope == "organization" and not caller.is_admin:
                raise _denied("This user is not authorized to perform this action")
            if scope == "user" and not can_see(caller, str(user)):
                raise _denied()
            items = [
                s
                for s in sim._webhook_subs.values()
                if s.organization == org and s.scope == scope and (scope != "user" or s.user == user)
            ]
            path = "/webhook_subscriptions"
            page, count = paginate(
                request, items, lambda s: [iso_us_z(s.created_at), s.uuid], path, sort.endswith("desc")
            )
            return {
                "collection": [sim._webhook_sub_json(s) for s in page.items],
                "pagination": page_json(request, page, path, count),
            }

    @app.get("/webhook_subscriptions/{uuid}")
    async def get_webhook(uuid: str, request: Request) -> dict[str, Any]:
        with sim._lock:
            return {"resource": sim._webhook_sub_json(visible_sub(request, uuid))}

    @app.delete("/webhook_subscriptions/{uuid}", status_code=204)
    async def delete_webhook(uuid: str, request: Request) -> Response:
        with sim._lock:
            visible_sub(request, uuid)
            sim.delete_webhook_subscription(uuid)
        return Response(status_code=204)
