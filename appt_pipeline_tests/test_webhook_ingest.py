"""Webhook ingestion (SPEC §7, §4.3, §4.4): staged deliveries → the one write path, against the real database.

Deliveries are staged exactly as the intake service stages them (``stage_calendly``/``stage_ghl`` +
``insert_events``) and ingested with ``ingest_workspace``.
"""

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from appt_pipeline.domain.webhook_staging import email_hash
from appt_pipeline.pipelines.webhook_ingest import ingest_workspace
from appt_pipeline_tests.helpers import rows, seed
from appt_pipeline_tests.helpers.webhooks import API, calendly_body, deliver, ghl_body, inv_uri, with_email


def appts(engine: sa.Engine, ws: str = "ws1") -> list[sa.Row[Any]]:
    return rows(engine, "SELECT a.*, p.calendly_invitee_uri AS from_uri FROM appointments a "
                        "LEFT JOIN appointments p ON p.id = a.rescheduled_from_id "
                        "WHERE a.workspace_id = :ws ORDER BY a.created_at, a.id", ws=ws)


def events(engine: sa.Engine) -> list[tuple[str, str, str | None]]:
    return [tuple(r) for r in rows(engine, "SELECT event_type, status, error FROM webhook_events ORDER BY id")]


def tasks(engine: sa.Engine) -> list[tuple[str, str, str, bool]]:
    return [tuple(r) for r in rows(engine, "SELECT lead_id, type, status, is_urgent FROM follow_up_tasks "
                                           "ORDER BY created_at, type")]


def test_created_matches_by_email_hash_and_writes_history_rollup_and_audit(db: sa.Engine) -> None:
    [lead, _] = seed(db, leads=2)
    with_email(db, lead, status="qualified")
    assert deliver(db, "ws1", calendly_body("invitee.created", "i1")) == 1
    report = ingest_workspace(db, "ws1")
    assert (report.processed, report.new_bookings, report.ignored, report.failed) == (1, 1, 0, 0)
    [row] = appts(db)
    assert (row.lead_id, row.status, row.source, row.calendly_invitee_uri) == (lead, "CONFIRMED", "WEBHOOK",
                                                                                 inv_uri("i1"))
    assert row.calendly_event_type_uri == f"{API}/event_types/et1" and row.timezone == "America/New_York"
    [row_lead] = rows(db, "SELECT * FROM leads WHERE id = :id", id=lead)
    assert (row_lead.appointment_status, row_lead.appointment_source, row_lead.booked_slot, row_lead.status) == (
        "confirmed", "webhook", "2026-03-05T15:00:00.000Z", "meeting-booked")
    [change] = rows(db, "SELECT * FROM appointment_status_changes")
    [event_id] = [r[0] for r in rows(db, "SELECT id FROM webhook_events")]
    assert (change.to_status, change.source, change.webhook_event_id) == ("CONFIRMED", "WEBHOOK", event_id)
    assert events(db) == [("invitee.created", "processed", None)]


def test_ingesting_twice_and_duplicate_deliveries_change_nothing(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    body = calendly_body("invitee.created", "i1")
    assert deliver(db, "ws1", body) == 1
    assert deliver(db, "ws1", body) == 0  # redelivery: same dedupe key, not stored again
    ingest_workspace(db, "ws1")
    before = [(r.status, r.status_changed_at, r.start_at) for r in appts(db)]
    again = ingest_workspace(db, "ws1")
    assert again.claimed == 0
    # GHL-style redelivery with a new id of the same change (a second staging row): applied, nothing changes
    body2 = calendly_body("invitee.created", "i1")
    body2["created_at"] = "2026-03-01T10:00:01Z"
    assert deliver(db, "ws1", body2) == 1
    third = ingest_workspace(db, "ws1")
    assert (third.processed, third.status_changes, third.new_bookings) == (1, 0, 0)
    assert [(r.status, r.status_changed_at, r.start_at) for r in appts(db)] == before
    assert len(rows(db, "SELECT * FROM appointment_status_changes")) == 1


def test_cancel_creates_one_meeting_canceled_task_in_lead_timezone_and_rebooking_completes_it(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1, lead_tz="Europe/Berlin")
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1"))
    ingest_workspace(db, "ws1")
    deliver(db, "ws1", calendly_body("invitee.canceled", "i1", status="canceled", updated="2026-03-02T08:00:00Z"))
    report = ingest_workspace(db, "ws1")
    assert report.cancellations == 1
    [row] = appts(db)
    assert row.status == "CANCELED" and row.canceled_at == datetime(2026, 3, 2, 8, tzinfo=UTC)
    assert "[redacted-email]" in row.cancel_reason and "@" not in row.cancel_reason
    [task] = rows(db, "SELECT * FROM follow_up_tasks")
    assert (task.type, task.status, task.is_urgent) == ("meeting-canceled", "pending", True)
    assert "Thu, Mar 5, 4:00 PM" in task.suggested_message  # 15:00 UTC in Berlin
    assert rows(db, "SELECT status FROM leads")[0][0] == "qualified"
    # replayed cancellation: still one pending task
    again = calendly_body("invitee.canceled", "i1", status="canceled", updated="2026-03-02T08:00:00Z")
    again["created_at"] = "2026-03-02T08:00:05Z"
    deliver(db, "ws1", again)
    ingest_workspace(db, "ws1")
    assert tasks(db) == [(lead, "meeting-canceled", "pending", True)]
    # the lead books again: the pending meeting-canceled task is cancelled
    deliver(db, "ws1", calendly_body("invitee.created", "i2", updated="2026-03-03T08:00:00Z",
                                     start="2026-03-09T15:00:00Z"))
    ingest_workspace(db, "ws1")
    assert tasks(db) == [(lead, "meeting-canceled", "cancelled", True)]
    assert rows(db, "SELECT status FROM leads")[0][0] == "meeting-booked"


def _reschedule_pair() -> tuple[dict[str, Any], dict[str, Any]]:
    old = calendly_body("invitee.canceled", "old", status="canceled", rescheduled=True, new="new",
                        updated="2026-03-02T08:00:00Z")
    new = calendly_body("invitee.created", "new", old="old", start="2026-03-06T15:00:00Z",
                        updated="2026-03-02T08:00:00Z")
    return old, new


def _assert_rescheduled(db: sa.Engine, lead: str) -> None:
    by_uri = {r.calendly_invitee_uri: r for r in appts(db)}
    old, new = by_uri[inv_uri("old")], by_uri[inv_uri("new")]
    assert (old.status, new.status) == ("RESCHEDULED", "CONFIRMED")
    assert new.from_uri == inv_uri("old") and old.rescheduled_from_id is None
    assert tasks(db) == [(lead, "meeting-rescheduled", "pending", True)]  # never a "canceled" task
    [task] = rows(db, "SELECT suggested_message FROM follow_up_tasks")
    assert "Mar 5" in task[0]  # the original start time
    [row_lead] = rows(db, "SELECT * FROM leads WHERE id = :id", id=lead)
    assert (row_lead.calendly_invitee_uri, row_lead.appointment_status, row_lead.status) == (
        inv_uri("new"), "confirmed", "meeting-booked")


def test_reschedule_links_exactly_when_old_canceled_arrives_first(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "old", updated="2026-03-01T08:00:00Z"))
    ingest_workspace(db, "ws1")
    old, new = _reschedule_pair()
    deliver(db, "ws1", old)
    ingest_workspace(db, "ws1")
    deliver(db, "ws1", new)
    ingest_workspace(db, "ws1")
    _assert_rescheduled(db, lead)


def test_reschedule_links_exactly_when_new_created_arrives_first(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "old", updated="2026-03-01T08:00:00Z"))
    ingest_workspace(db, "ws1")
    old, new = _reschedule_pair()
    deliver(db, "ws1", new)
    report = ingest_workspace(db, "ws1")
    assert report.new_bookings == 1
    deliver(db, "ws1", old)
    report = ingest_workspace(db, "ws1")
    assert report.reschedules == 1 and report.cancellations == 0
    _assert_rescheduled(db, lead)


def test_reschedule_pair_new_to_us_in_one_batch_matches_both_through_the_partner(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    old, new = _reschedule_pair()
    old["payload"]["email"] = None  # only the new invitee's e-mail is known
    deliver(db, "ws1", new, old)
    report = ingest_workspace(db, "ws1")
    assert (report.processed, report.ignored) == (2, 0)
    by_uri = {r.calendly_invitee_uri: r for r in appts(db)}
    assert by_uri[inv_uri("new")].from_uri == inv_uri("old")
    assert by_uri[inv_uri("old")].status == "RESCHEDULED"


def test_late_or_replayed_created_never_resurrects_a_canceled_invitee(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    # canceled arrives before created (both new to us), in separate runs
    deliver(db, "ws1", calendly_body("invitee.canceled", "i1", status="canceled", updated="2026-03-02T08:00:00Z"))
    ingest_workspace(db, "ws1")
    deliver(db, "ws1", calendly_body("invitee.created", "i1", updated="2026-03-01T08:00:00Z"))
    ingest_workspace(db, "ws1")
    [row] = appts(db)
    assert row.status == "CANCELED"
    # and a replayed created with a *newer* delivery time still does not reactivate it (terminal, §4.1)
    deliver(db, "ws1", calendly_body("invitee.created", "i1", updated="2026-03-04T08:00:00Z"))
    ingest_workspace(db, "ws1")
    assert [r.status for r in appts(db)] == ["CANCELED"]
    assert rows(db, "SELECT appointment_status FROM leads")[0][0] == "canceled"


def test_created_then_canceled_in_one_batch_apply_in_provider_time_order(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.canceled", "i1", status="canceled", updated="2026-03-02T08:00:00Z"),
            calendly_body("invitee.created", "i1", updated="2026-03-01T08:00:00Z"))
    report = ingest_workspace(db, "ws1")
    assert report.processed == 2
    assert [r.status for r in appts(db)] == ["CANCELED"]
    assert [tuple(r) for r in rows(db, "SELECT from_status, to_status FROM appointment_status_changes ORDER BY id")] \
        == [(None, "CONFIRMED"), ("CONFIRMED", "CANCELED")]


def test_no_show_created_and_deleted(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1", updated="2026-03-01T08:00:00Z"))
    deliver(db, "ws1", calendly_body("invitee_no_show.created", "i1", no_show=True, updated="2026-03-05T16:00:00Z"))
    report = ingest_workspace(db, "ws1")
    assert report.no_shows == 1 and [r.status for r in appts(db)] == ["NO_SHOW"]
    deliver(db, "ws1", calendly_body("invitee_no_show.deleted", "i1", updated="2026-03-05T17:00:00Z"))
    ingest_workspace(db, "ws1")
    assert [r.status for r in appts(db)] == ["CONFIRMED"]


def test_unknown_lead_and_no_show_of_unknown_invitee_are_ignored_with_reason(db: sa.Engine) -> None:
    seed(db, leads=1)
    deliver(db, "ws1", calendly_body("invitee.created", "i1", email="stranger@example.com"),
            calendly_body("invitee_no_show.created", "i9", no_show=True, email=None),
            ghl_body("AppointmentDelete", "unknown-appt", contact="nobody"))
    report = ingest_workspace(db, "ws1")
    assert (report.ignored, report.ignored_by_reason["lead_not_found"]) == (3, 3)
    assert appts(db) == []
    assert {e[1:] for e in events(db)} == {("ignored", "lead_not_found")}


def test_matching_never_crosses_workspaces(db: sa.Engine) -> None:
    [a] = seed(db, "wsA", leads=1)
    [b] = seed(db, "wsB", leads=1)
    with_email(db, b)
    deliver(db, "wsB", calendly_body("invitee.created", "i1"))
    ingest_workspace(db, "wsB")
    # the same invitee (and e-mail) delivered to workspace A: A has no such booking and no such lead
    deliver(db, "wsA", calendly_body("invitee.canceled", "i1", status="canceled", updated="2026-03-02T08:00:00Z"))
    report = ingest_workspace(db, "wsA")
    assert report.ignored_by_reason == {"lead_not_found": 1}
    assert [r.status for r in appts(db, "wsB")] == ["CONFIRMED"]
    assert a != b


def test_ghl_create_reschedule_delete_and_contact_matching(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead, email=None, contact="contact-1")
    deliver(db, "ws1", ghl_body("AppointmentCreate", "g1", updated="2026-03-01T08:00:00Z"))
    ingest_workspace(db, "ws1")
    [row] = appts(db)
    assert (row.lead_id, row.status, row.ghl_calendar_id, row.source) == (lead, "CONFIRMED", "cal-1", "WEBHOOK")
    # reschedule: same id, new time (matched by appointment id now, whatever the contact says)
    deliver(db, "ws1", ghl_body("AppointmentUpdate", "g1", contact="other", start="2026-03-07T10:00:00Z",
                                updated="2026-03-02T08:00:00Z"))
    ingest_workspace(db, "ws1")
    [row] = appts(db)
    assert row.start_at == datetime(2026, 3, 7, 10, tzinfo=UTC) and row.status == "CONFIRMED"
    assert rows(db, "SELECT booked_slot FROM leads")[0][0] == "2026-03-07T10:00:00.000Z"
    # a stale update (older dateUpdated) does not move it back
    deliver(db, "ws1", ghl_body("AppointmentUpdate", "g1", start="2026-03-05T15:00:00Z",
                                updated="2026-03-01T09:00:00Z"))
    ingest_workspace(db, "ws1")
    assert appts(db)[0].start_at == datetime(2026, 3, 7, 10, tzinfo=UTC)
    deliver(db, "ws1", ghl_body("AppointmentDelete", "g1", updated="2026-03-03T08:00:00Z"))
    ingest_workspace(db, "ws1")
    [row] = appts(db)
    assert (row.status, row.cancel_reason) == ("CANCELED", "deleted")
    assert tasks(db) == [(lead, "meeting-canceled", "pending", True)]


def test_one_bad_event_fails_alone_and_unhandled_events_are_ignored(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead, contact="contact-1")
    deliver(db, "ws1", ghl_body("AppointmentCreate", "g-bad", status="tentative-ish"),
            ghl_body("AppointmentCreate", "g-ok", updated="2026-03-01T11:00:00Z"),
            {"type": "ContactCreate", "locationId": "loc-1", "webhookId": "w-contact",
             "timestamp": datetime.now(UTC).isoformat(), "email": "jane.roe@example.com"})
    report = ingest_workspace(db, "ws1")
    assert (report.processed, report.failed, report.failed_by_kind) == (1, 1, {"unknown_status": 1})
    assert report.ignored == 0  # the unhandled event was stored as ignored at intake, never claimed
    assert [r.ghl_appointment_id for r in appts(db)] == ["g-ok"]
    assert sorted(events(db)) == [("AppointmentCreate", "failed", "unknown_status"),
                                  ("AppointmentCreate", "processed", None), ("ContactCreate", "ignored",
                                                                             "unhandled_event")]


def test_dry_run_writes_nothing_and_leaves_rows_pending(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1"))
    report = ingest_workspace(db, "ws1", dry_run=True)
    assert report.new_bookings == 1
    assert appts(db) == [] and events(db) == [("invitee.created", "pending", None)]


def test_email_hash_sql_agrees_with_python(db: sa.Engine) -> None:
    [lead] = seed(db, leads=1)
    with_email(db, lead, email="  MiXed.Case+tag@Example.COM ")
    with db.connect() as conn:
        got = conn.execute(sa.text("SELECT encode(sha256(convert_to(:ws || ':' || lower(btrim(email)), 'UTF8')), "
                                   "'hex') FROM leads"), {"ws": "ws1"}).scalar_one()
    assert got == email_hash("ws1", "mixed.case+tag@example.com")


def test_batches_cover_every_pending_row(db: sa.Engine) -> None:
    leads = seed(db, leads=5)
    for i, lead in enumerate(leads):
        with_email(db, lead, email=f"lead{i}@example.com")
    deliver(db, "ws1", *[calendly_body("invitee.created", f"i{i}", email=f"lead{i % 5}@example.com",
                                       updated=f"2026-03-01T10:{i:02d}:00Z") for i in range(23)])
    report = ingest_workspace(db, "ws1", batch_size=5)
    assert (report.claimed, report.processed, report.batches) == (23, 23, 5)
    assert len(appts(db)) == 23


# --------------------------------------------------------------------------- transient database errors


def _url_with(database_url: str, **options: str) -> str:
    """``database_url`` whose sessions start with the given server settings (``-c name=value``)."""
    opts = " ".join(f"-c {k}={v}" for k, v in options.items())
    return sa.make_url(database_url).update_query_dict({"options": opts}).render_as_string(hide_password=False)


def test_a_lock_timeout_fails_the_run_and_leaves_the_rows_pending(db: sa.Engine, database_url: str) -> None:
    """A real lock conflict (another session holds the lead row) is transient: the webhook run fails, its rows stay
    pending, nothing is marked failed, and the next run applies them."""
    import dagster as dg

    from appt_pipeline.definitions import defs
    from appt_pipeline.defs.partitions import workspace_partitions
    from appt_pipeline.defs.resources import AppDatabase

    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1"), calendly_body("invitee.created", "i2",
                                                                            updated="2026-03-01T11:00:00Z"))
    impatient = AppDatabase(url=_url_with(database_url, lock_timeout="200ms"))
    job = defs.resolve_job_def("webhook_ingest_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, ["ws1"])
        with db.connect() as holder, holder.begin():
            holder.execute(sa.text("SELECT 1 FROM leads WHERE id = :id FOR UPDATE"), {"id": lead})
            result = job.execute_in_process(partition_key="ws1", instance=instance, raise_on_error=False,
                                            resources={"app_db": impatient})
        assert not result.success
        assert events(db) == [("invitee.created", "pending", None)] * 2
        assert appts(db) == []
        again = job.execute_in_process(partition_key="ws1", instance=instance, resources={"app_db": impatient})
    assert again.success
    assert events(db) == [("invitee.created", "processed", None)] * 2


def test_a_terminated_connection_during_ingestion_leaves_the_rows_pending(db: sa.Engine) -> None:
    """The server ends the ingesting session (``pg_terminate_backend`` from a second connection) while it waits
    for a lock: ingestion raises, no row is marked, the rows stay pending for the next run."""
    import threading

    [lead] = seed(db, leads=1)
    with_email(db, lead)
    deliver(db, "ws1", calendly_body("invitee.created", "i1"))
    outcome: dict[str, BaseException] = {}

    def ingest() -> None:
        try:
            ingest_workspace(db, "ws1")
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    with db.connect() as holder, holder.begin():
        holder.execute(sa.text("SELECT 1 FROM leads WHERE id = :id FOR UPDATE"), {"id": lead})
        worker = threading.Thread(target=ingest)
        worker.start()
        with db.connect() as admin:
            for _ in range(100):  # wait until the ingestion blocks on the lead row's lock
                blocked = admin.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND wait_event_type = 'Lock'")).scalars().all()
                if blocked:
                    break
                worker.join(0.05)
            assert blocked, "ingestion never waited for the lock"
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": blocked[0]})
        worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), sa.exc.DBAPIError)
    assert events(db) == [("invitee.created", "pending", None)]
    assert ingest_workspace(db, "ws1").processed == 1
    assert events(db) == [("invitee.created", "processed", None)]


def test_requeue_puts_failed_rows_back_to_pending(db: sa.Engine) -> None:
    from appt_pipeline.store.webhook_events import requeue_events

    for ws in ("ws1", "ws2"):
        [lead] = seed(db, ws, leads=1)
        with_email(db, lead, contact=f"contact-{ws}")
    deliver(db, "ws1", ghl_body("AppointmentCreate", "g-bad", contact="contact-ws1", status="tentative-ish"),
            ghl_body("AppointmentCreate", "g-ok", contact="contact-ws1", updated="2026-03-01T11:00:00Z"))
    deliver(db, "ws2", ghl_body("AppointmentCreate", "g-other", contact="contact-ws2", status="tentative-ish"))
    ingest_workspace(db, "ws1")
    ingest_workspace(db, "ws2")
    state = "SELECT workspace_id, status, error, processed_at IS NULL FROM webhook_events ORDER BY id"
    assert [tuple(r) for r in rows(db, state)] == [("ws1", "failed", "unknown_status", False),
                                                   ("ws1", "processed", None, False),
                                                   ("ws2", "failed", "unknown_status", False)]
    with db.begin() as conn:
        assert requeue_events(conn, "ws1") == 1
    assert [tuple(r) for r in rows(db, state)] == [("ws1", "pending", None, True), ("ws1", "processed", None, False),
                                                   ("ws2", "failed", "unknown_status", False)]
    with db.begin() as conn:
        assert requeue_events(conn, "ws1") == 0
    with db.connect() as conn, pytest.raises(ValueError):
        requeue_events(conn, "ws1", "processed")


def test_purge_keeps_dedupe_keys_at_least_30_days_and_never_pending_rows(db: sa.Engine) -> None:
    from datetime import timedelta

    from appt_pipeline.store.webhook_events import purge_events

    [lead] = seed(db, leads=1)
    with_email(db, lead)
    old_done, old_pending, recent = (calendly_body("invitee.created", i) for i in ("i-old", "i-pending", "i-new"))
    assert deliver(db, "ws1", old_done, old_pending, recent) == 3
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE webhook_events SET received_at = :t WHERE id IN (SELECT min(id) FROM "
                             "webhook_events UNION SELECT min(id) + 1 FROM webhook_events)"),
                     {"t": now - timedelta(days=31)})
        conn.execute(sa.text("UPDATE webhook_events SET status = 'processed', processed_at = :t WHERE id IN "
                             "(SELECT min(id) FROM webhook_events UNION SELECT max(id) FROM webhook_events)"),
                     {"t": now})
        with pytest.raises(ValueError, match="at least 30 days"):
            purge_events(conn, now=now, keep_s=29 * 86400)
        assert purge_events(conn, now=now) == 1  # the old processed row only
    left = rows(db, "SELECT status FROM webhook_events ORDER BY id")
    assert [r.status for r in left] == ["pending", "processed"]
    # the purged key is new again, the kept ones are still duplicates
    assert deliver(db, "ws1", old_done) == 1 and deliver(db, "ws1", old_pending, recent) == 0
