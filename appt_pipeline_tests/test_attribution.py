"""Attribution backfill (SPEC §9) against the provider simulators over real loopback HTTP and the real database."""

import asyncio
import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from appt_pipeline.defs.attribution import attribution_backfill_job, calendar_attribution
from appt_pipeline.defs.partitions import workspace_partitions
from appt_pipeline.defs.resources import AppDatabase, ProviderClients
from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.rules import utc_now
from appt_pipeline.domain.vocab import Provider, Source, Status
from appt_pipeline.pipelines.attribution import AttributionReport, backfill_attribution, load_attribution_accounts
from appt_pipeline.sandbox import (
    CalendlyEventType,
    CalendlyInvitee,
    CalendlyScheduledEvent,
    CalendlySeed,
    CalendlySimulator,
    CalendlyUser,
    GhlAppointment,
    GhlCalendar,
    GhlContact,
    GhlLocation,
    GhlSeed,
    GhlSimulator,
    SimulatorServer,
)
from appt_pipeline.store.attribution import AttributionFill, attribution_coverage, fill_attribution
from appt_pipeline.store.workspaces import set_secret, set_workspace
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import QUICK_RETRY, SECRET_KEY, rows, working_day_slot

KEY = SECRET_KEY
WS = "ws_attr"
API = "https://api.calendly.com"
ORG_ID = "0000aaaa-0000-0000-0000-0000000000a1"
INTRO = f"{API}/event_types/11111111-1111-1111-1111-1111111111a1"
OTHER = f"{API}/event_types/22222222-2222-2222-2222-2222222222a2"
EV_GROUP = "44444444-0000-0000-0000-0000000000a1"
EV_SOLO = "44444444-0000-0000-0000-0000000000a2"
GHL_CALENDARS = {"g1": "cal_a", "g2": "cal_b", "g3": "cal_a", "g4": "cal_b", "g5": "cal_a", "g6": "cal_b"}
GHL_GET = "/calendars/events/appointments/"


def _days(n: int) -> str:
    """15:00 UTC on the n-th working day from today (a slot the simulator offers on any date)."""
    return working_day_slot(n)


def _event(uuid: str) -> str:
    return f"{API}/scheduled_events/{uuid}"


def _invitee(event_uuid: str, uuid: str) -> str:
    return f"{_event(event_uuid)}/invitees/{uuid}"


@pytest.fixture()
def ghl_url() -> Iterator[tuple[GhlSimulator, str]]:
    seed = GhlSeed(locations=[GhlLocation(
        id="loc1", token="tok-ghl-1", timezone="UTC",
        calendars=[GhlCalendar(id="cal_a"), GhlCalendar(id="cal_b", name="Demo")],
        contacts=[GhlContact(email="a@example.com", id="c_a")],
        appointments=[GhlAppointment(id=g, calendar_id=cal, contact_id="c_a", start=_days(n + 1))
                      for n, (g, cal) in enumerate(GHL_CALENDARS.items())],
    )])
    sim = GhlSimulator(seed)
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


@pytest.fixture()
def calendly_url() -> Iterator[tuple[CalendlySimulator, str]]:
    intro = CalendlyEventType(name="Intro", slug="intro", uuid=INTRO.rsplit("/", 1)[1], kind="group", max_invitees=5)
    other = CalendlyEventType(name="Other", slug="other", uuid=OTHER.rsplit("/", 1)[1])
    user = CalendlyUser(token="tok-cal-1", email="rep@example.com", uuid="33333333-3333-3333-3333-3333333333a3",
                        organization=ORG_ID, event_types=[intro, other], scheduled_events=[
                            CalendlyScheduledEvent(event_type="intro", start=_days(3), uuid=EV_GROUP, invitees=[
                                CalendlyInvitee(email="x@example.com", uuid="55555555-0000-0000-0000-0000000000a1"),
                                CalendlyInvitee(email="y@example.com", uuid="55555555-0000-0000-0000-0000000000a2"),
                            ]),
                            CalendlyScheduledEvent(event_type="other", start=_days(4), uuid=EV_SOLO, invitees=[
                                CalendlyInvitee(email="z@example.com", uuid="55555555-0000-0000-0000-0000000000a3"),
                            ]),
                        ])
    sim = CalendlySimulator(CalendlySeed(users=[user]))
    with SimulatorServer(sim) as server:
        yield sim, server.base_url


def _workspace(engine: sa.Engine, ghl: str | None, calendly: str | None, ws: str = WS) -> None:
    values: dict[str, Any] = {"meeting_booking_provider": "GHL", "timezone": "UTC"}
    if ghl:
        values.update(ghl_location_id="loc1" if ws == WS else f"loc_{ws}", ghl_api_base_url=ghl)
    if calendly:
        values.update(calendly_organization_uri=f"{API}/organizations/{ORG_ID}", calendly_api_base_url=calendly)
    set_workspace(engine, ws, values)
    if ghl:
        set_secret(engine, ws, "ghl_private_token", "tok-ghl-1", KEY)
    if calendly:
        set_secret(engine, ws, "calendly_access_token", "tok-cal-1", KEY)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id) VALUES (:id, :ws) ON CONFLICT DO NOTHING"),
                     {"id": f"{ws}_lead", "ws": ws})


def _insert(engine: sa.Engine, observations: list[Observation]) -> None:
    """Write rows through the one write path, then make their ``created_at`` ascend in list order."""
    write_observations(engine, observations)
    base = utc_now() - timedelta(days=30)
    with engine.begin() as conn:
        for n, o in enumerate(observations):
            conn.execute(sa.text("UPDATE appointments SET created_at = :t WHERE ghl_appointment_id = :g "
                                 "OR calendly_invitee_uri = :i"),
                         {"t": base + timedelta(minutes=n), "g": o.ghl_appointment_id, "i": o.calendly_invitee_uri})


def _ghl_obs(appt: str, ws: str = WS, **kw: Any) -> Observation:
    return Observation(workspace_id=ws, lead_id=f"{ws}_lead", provider=Provider.GHL, status=Status.CONFIRMED,
                       source=Source.BACKFILL, ghl_appointment_id=appt, **kw)


def _cal_obs(event_uuid: str, invitee_uuid: str, *, with_event: bool = True, **kw: Any) -> Observation:
    return Observation(workspace_id=WS, lead_id=f"{WS}_lead", provider=Provider.CALENDLY, status=Status.CONFIRMED,
                       source=Source.BACKFILL, calendly_invitee_uri=_invitee(event_uuid, invitee_uuid),
                       calendly_scheduled_event_uri=_event(event_uuid) if with_event else None, **kw)


def _run(engine: sa.Engine, **kw: Any) -> AttributionReport:
    accounts, not_configured = load_attribution_accounts(engine, WS, KEY)
    kw.setdefault("pause_s", 0.0)
    return asyncio.run(backfill_attribution(engine, accounts, workspace_id=WS, not_configured=not_configured,
                                            retry=QUICK_RETRY, **kw))


def _attribution(engine: sa.Engine) -> dict[str, str | None]:
    got = rows(engine, "SELECT coalesce(ghl_appointment_id, calendly_invitee_uri) AS k, coalesce(ghl_calendar_id, "
                       "calendly_event_type_uri) AS v FROM appointments WHERE workspace_id = :ws", ws=WS)
    return {r.k: r.v for r in got}


def _ghl_request_times(sim: GhlSimulator) -> list[float]:
    return sorted(r.at for r in sim.accounting.log if r.path.startswith(GHL_GET) and r.outcome == "accepted")


def test_fills_in_batches_with_a_pause_between_them(db: sa.Engine, ghl_url: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_url
    _workspace(db, url, None)
    _insert(db, [_ghl_obs(g) for g in ("g1", "g2", "g3", "g4", "g5")])
    report = _run(db, batch_size=2, pause_s=0.25)
    assert (report.candidates, report.lookups, report.batches, report.filled, report.failed) == (5, 5, 3, 5, 0)
    assert report.filled_by_provider == {"GHL": 5} and report.api["api_requests"] == 5
    assert report.paused_s == pytest.approx(0.5) and report.duration_s >= 0.5
    assert _attribution(db) == {g: GHL_CALENDARS[g] for g in ("g1", "g2", "g3", "g4", "g5")}
    # the provider saw three bursts (2, 2, 1 requests) separated by at least the pause
    times = _ghl_request_times(sim)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5
    assert gaps[1] >= 0.24 and gaps[3] >= 0.24
    assert gaps[0] < 0.2 and gaps[2] < 0.2
    assert report.coverage["GHL"] == {"total": 5, "attributed": 5, "missing": 0, "unresolvable": 0, "ratio": 1.0}
    assert report.not_configured == {"CALENDLY": "needs calendly_access_token"}


def test_calendly_event_types_one_lookup_per_event_and_coverage(
    db: sa.Engine, ghl_url: tuple[GhlSimulator, str], calendly_url: tuple[CalendlySimulator, str]
) -> None:
    _, g_url = ghl_url
    _, c_url = calendly_url
    _workspace(db, g_url, c_url)
    _insert(db, [
        _ghl_obs("g1"),
        _cal_obs(EV_GROUP, "55555555-0000-0000-0000-0000000000a1"),
        _cal_obs(EV_GROUP, "55555555-0000-0000-0000-0000000000a2"),
        # the event URI is not stored: it is read from the canonical invitee URI
        _cal_obs(EV_SOLO, "55555555-0000-0000-0000-0000000000a3", with_event=False),
        _ghl_obs("g2", ghl_calendar_id="cal_stored"),
    ])
    with db.connect() as conn:
        before = attribution_coverage(conn, WS)
    assert (before["GHL"].total, before["GHL"].attributed, before["GHL"].ratio) == (2, 1, 0.5)
    assert (before["CALENDLY"].missing, before["CALENDLY"].ratio) == (3, 0.0)
    report = _run(db, batch_size=10)
    assert (report.candidates, report.lookups, report.filled, report.failed) == (4, 3, 4, 0)
    assert report.candidates_by_provider == {"CALENDLY": 3, "GHL": 1}
    assert report.filled_by_provider == {"CALENDLY": 3, "GHL": 1}
    assert report.api_by_provider["CALENDLY"]["api_requests"] == 2
    assert report.api_by_provider["GHL"]["api_requests"] == 1
    assert _attribution(db) == {
        "g1": "cal_a", "g2": "cal_stored",
        _invitee(EV_GROUP, "55555555-0000-0000-0000-0000000000a1"): INTRO,
        _invitee(EV_GROUP, "55555555-0000-0000-0000-0000000000a2"): INTRO,
        _invitee(EV_SOLO, "55555555-0000-0000-0000-0000000000a3"): OTHER,
    }
    assert report.coverage["*"] == {"total": 5, "attributed": 5, "missing": 0, "unresolvable": 0, "ratio": 1.0}
    assert report.not_configured == {}


def test_limit_takes_the_oldest_first_and_is_clamped(db: sa.Engine, ghl_url: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_url
    _workspace(db, url, None)
    _insert(db, [_ghl_obs(g) for g in ("g5", "g4", "g3", "g2", "g1")])  # g5 is the oldest row
    first = _run(db, limit=2)
    assert (first.limit, first.candidates, first.filled, first.clamped) == (2, 2, 2, {})
    assert {k for k, v in _attribution(db).items() if v} == {"g5", "g4"}
    second = _run(db, limit=9_000, batch_size=0, pause_s=-1)
    assert second.limit == 5_000 and second.batch_size == 1 and second.pause_s == 0.0
    assert second.clamped == {"limit": {"requested": 9_000, "used": 5_000},
                              "batch_size": {"requested": 0, "used": 1},
                              "pause_s": {"requested": -1.0, "used": 0.0}}
    assert (second.candidates, second.filled, second.batches) == (3, 3, 3)
    assert all(_attribution(db).values())


def test_a_failing_row_is_isolated_and_counted(
    db: sa.Engine, ghl_url: tuple[GhlSimulator, str], calendly_url: tuple[CalendlySimulator, str]
) -> None:
    g_sim, g_url = ghl_url
    _, c_url = calendly_url
    _workspace(db, g_url, c_url)
    unknown_event = "44444444-0000-0000-0000-0000000000ff"
    _insert(db, [_ghl_obs("g1"), _ghl_obs("g_unknown"), _ghl_obs("g3"), _ghl_obs("g4"),
                 _cal_obs(unknown_event, "55555555-0000-0000-0000-0000000000ff"),
                 _cal_obs(EV_SOLO, "55555555-0000-0000-0000-0000000000a3")])
    # the provider fails g3 with 500s every time (retried, then given up); the rest of the run goes on
    g_sim.faults.configure(error_rate=1.0, error_statuses=(500,), only_paths=(GHL_GET + "g3",), seed=1)
    report = _run(db, batch_size=2)
    assert (report.candidates, report.filled, report.failed) == (6, 3, 3)
    assert report.failed_by_kind == {"calendly_not_found": 1, "ghl_not_found": 1, "ghl_server": 1}
    assert report.api["api_retries"] >= 1 and report.api["api_errors"] == 3
    got = _attribution(db)
    assert (got["g1"], got["g4"], got[_invitee(EV_SOLO, "55555555-0000-0000-0000-0000000000a3")]) == (
        "cal_a", "cal_b", OTHER)
    assert got["g_unknown"] is None and got["g3"] is None
    assert report.coverage["GHL"]["missing"] == 2 and report.coverage["CALENDLY"]["missing"] == 1
    # the provider recovers: the next run fills g3 and counts the still-unknown rows again
    g_sim.faults.clear()
    again = _run(db)
    assert (again.candidates, again.filled, again.failed) == (3, 1, 2)


def test_rerun_fills_nothing_and_never_overwrites(db: sa.Engine, ghl_url: tuple[GhlSimulator, str]) -> None:
    sim, url = ghl_url
    _workspace(db, url, None)
    _insert(db, [_ghl_obs("g1", ghl_calendar_id="cal_written_by_webhook"), _ghl_obs("g2"), _ghl_obs("g3")])
    first = _run(db)
    assert (first.candidates, first.filled) == (2, 2)
    updated = {r.ghl_appointment_id: r.updated_at for r in rows(db, "SELECT * FROM appointments")}
    second = _run(db)
    assert (second.candidates, second.filled, second.failed, second.api["api_requests"]) == (0, 0, 0, 0)
    assert _attribution(db) == {"g1": "cal_written_by_webhook", "g2": "cal_b", "g3": "cal_a"}
    assert {r.ghl_appointment_id: r.updated_at for r in rows(db, "SELECT * FROM appointments")} == updated
    # the batch UPDATE itself only sets NULL columns: a value stored meanwhile is kept, the row not counted
    ids = {r.ghl_appointment_id: str(r.id) for r in rows(db, "SELECT id, ghl_appointment_id FROM appointments")}
    with db.begin() as conn:
        written = fill_attribution(conn, WS, [AttributionFill(ids["g1"], ghl_calendar_id="cal_other"),
                                              AttributionFill(ids["g2"], calendly_event_type_uri=INTRO),
                                              AttributionFill(ids["g3"], ghl_calendar_id="  ")])
        assert written == {}
        # another workspace's id is never touched, even when named
        assert fill_attribution(conn, "ws_other", [AttributionFill(ids["g1"], ghl_calendar_id="x")]) == {}
    assert _attribution(db) == {"g1": "cal_written_by_webhook", "g2": "cal_b", "g3": "cal_a"}
    assert len(_ghl_request_times(sim)) == 2


def test_dry_run_asks_the_provider_but_writes_nothing(db: sa.Engine, ghl_url: tuple[GhlSimulator, str]) -> None:
    _, url = ghl_url
    _workspace(db, url, None)
    _insert(db, [_ghl_obs("g1"), _ghl_obs("g2")])
    before = rows(db, "SELECT id, ghl_calendar_id, updated_at FROM appointments ORDER BY id")
    report = _run(db, dry_run=True)
    assert (report.dry_run, report.candidates, report.filled, report.api["api_requests"]) == (True, 2, 2, 2)
    assert rows(db, "SELECT id, ghl_calendar_id, updated_at FROM appointments ORDER BY id") == before
    assert report.coverage["GHL"]["ratio"] == 0.0


def test_other_workspaces_and_unconfigured_providers_are_left_alone(
    db: sa.Engine, ghl_url: tuple[GhlSimulator, str]
) -> None:
    _, url = ghl_url
    _workspace(db, url, None)
    _workspace(db, url, None, ws="ws_other")
    _insert(db, [_ghl_obs("g1"), _ghl_obs("g2", ws="ws_other"),
                 _cal_obs(EV_SOLO, "55555555-0000-0000-0000-0000000000a3")])
    report = _run(db)
    assert (report.candidates, report.filled) == (1, 1)
    assert report.skipped_by_reason == {"calendly_not_configured": 1} and report.skipped == 1
    other = rows(db, "SELECT ghl_calendar_id FROM appointments WHERE workspace_id = 'ws_other'")
    assert other[0].ghl_calendar_id is None


def test_calendar_attribution_asset_materializes_with_coverage_metadata(
    db: sa.Engine, database_url: str, ghl_url: tuple[GhlSimulator, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = ghl_url
    _workspace(db, url, None)
    _insert(db, [_ghl_obs("g1"), _ghl_obs("g_unknown"), _ghl_obs("g2")])
    monkeypatch.setenv("APPT_TEST_ATTRIBUTION_KEY", KEY)
    defs = dg.Definitions(
        assets=[calendar_attribution], jobs=[attribution_backfill_job],
        resources={"app_db": AppDatabase(url=database_url),
                   "providers": ProviderClients(secret_key=dg.EnvVar("APPT_TEST_ATTRIBUTION_KEY"))},
    )
    job = defs.resolve_job_def("attribution_backfill_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(workspace_partitions.name, [WS])
        result = job.execute_in_process(
            partition_key=WS, instance=instance,
            run_config={"ops": {"calendar_attribution": {"config": {"batch_size": 2, "pause_ms": 50,
                                                                    "limit": 6000}}}},
        )
        assert result.success
        [event] = result.get_asset_materialization_events()
        materialization = event.step_materialization_data.materialization
        assert materialization.partition == WS
        meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["candidates"], meta["filled"], meta["failed"], meta["batches"]) == (3, 2, 1, 2)
    assert meta["failed_by_kind"] == {"ghl_not_found": 1}
    assert meta["coverage"]["GHL"] == {"total": 3, "attributed": 2, "missing": 1, "unresolvable": 0, "ratio": 0.6667}
    assert meta["coverage_ghl"] == pytest.approx(0.6667) and meta["ghl_missing"] == 1
    assert "coverage_calendly" not in meta and meta["calendly_missing"] == 0
    assert meta["api_requests"] == 3 and meta["api_429s"] == 0 and meta["duration_s"] >= 0.05
    assert (meta["limit"], meta["pause_ms"]) == (5000, 50)
    assert meta["clamped"] == {"limit": {"requested": 6000, "used": 5000}}
    assert meta["not_configured"] == {"CALENDLY": "needs calendly_access_token"}


def test_rows_the_provider_cannot_answer_do_not_starve_newer_rows(db: sa.Engine) -> None:
    """A row that always fails is stamped and goes behind the never-asked ones on the next run."""
    from appt_pipeline.store.attribution import mark_unanswered, select_missing_attribution

    set_workspace(db, "ws_s", {"meeting_booking_provider": "GHL"})
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO leads (id, workspace_id) VALUES ('ls', 'ws_s')"))
        for n, created in ((1, "2026-01-01"), (2, "2026-02-01"), (3, "2026-03-01")):
            conn.execute(sa.text(
                "INSERT INTO appointments (workspace_id, lead_id, provider, ghl_appointment_id, status, "
                "status_changed_at, source, last_source, last_observed_at, created_at) VALUES "
                "('ws_s', 'ls', 'GHL', :key, 'CONFIRMED', now(), 'MANUAL', 'MANUAL', now(), :created)"),
                {"key": f"g{n}", "created": created})
    with db.begin() as conn:
        first = select_missing_attribution(conn, "ws_s", limit=1)
        assert [c.lookup_key for c in first] == ["g1"]
        mark_unanswered(conn, "ws_s", [first[0].id], utc_now())
    with db.connect() as conn:
        assert [c.lookup_key for c in select_missing_attribution(conn, "ws_s", limit=3)] == ["g2", "g3", "g1"]
