"""End to end: the README's main command, `appt-pipeline demo`, on the embedded default, run twice — migration,
reconciliation, webhooks, attribution, availability, a booking per workspace through the API and capacity, all
as Dagster runs; the second run creates nothing, books nothing twice and finds no new drift."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from appt_pipeline_tests.helpers.e2e import cli, postgres_serving


def test_demo_on_the_embedded_default_runs_twice_and_creates_nothing_the_second_time(tmp_path: Path) -> None:

    def tables(stdout: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The migration and reconciliation rows, by workspace (whitespace-split columns)."""
        head, _, tail = stdout.partition("\nReconciliation (")
        tail = tail.partition("\nWebhooks:")[0]
        found = [{line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}
                 for part in (head, tail)]
        return found[0], found[1]

    def webhook_table(stdout: str) -> dict[str, list[str]]:
        """The webhook rows: workspace provider stored processed ignored failed new-bookings cancellations
        reschedules no-shows tasks in-history provider-drift rollup-check run status."""
        part = stdout.partition("\nWebhooks:")[2].partition("\nAnalytics and booking")[0]
        return {line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}

    def bookings(stdout: str) -> dict[str, list[str]]:
        """The booking rows: workspace lead slot HTTP state … appointment timeline."""
        part = stdout.partition("\nBookings through")[2].partition("\nCapacity of")[0]
        return {line.split()[0]: line.split() for line in part.splitlines() if line.startswith("ws_")}

    def capacity_totals(stdout: str) -> dict[str, list[str]]:
        """Per workspace, the total row of its capacity table: booked available total booked% unattributed …"""
        found = {}
        for block in stdout.split("\nCapacity of ")[1:]:
            ws = block.split(",")[0]
            total = next(line for line in block.splitlines() if line.startswith("* (total)"))
            found[ws] = total.split()[2:]
        return found

    def summary_lines(stdout: str) -> dict[str, str]:
        return {line.split(":")[0]: line for line in stdout.splitlines()
                if line.startswith(("Drift applied to the providers", "Drift check"))}

    def numbers(text: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", text)]

    # reconciliation columns: workspace provider checked due changed new-bookings cancellations reschedules
    # unchanged not-found errors api-calls 429s seconds provider-drift rollup-check run status
    checked, changed, new, canceled, rescheduled, unchanged, not_found, errors = 2, 4, 5, 6, 7, 8, 9, 10
    drift, rollups, status = 14, 15, 17
    applied = "Drift applied to the providers (seed 7)"

    env = {k: v for k, v in os.environ.items() if k not in ("APPT_DATABASE_URL", "APPT_DAGSTER_PG_URL",
                                                           "DAGSTER_HOME", "APPT_SECRET_KEY")}
    env["APPT_HOME"] = str(tmp_path / "appt")
    first = cli(["demo"], env, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "embedded PostgreSQL" in first.stderr
    lines, rec = tables(first.stdout)
    assert set(lines) == set(rec) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    created_first = {ws: int(cols[2]) for ws, cols in lines.items()}
    assert all(n > 600 for n in created_first.values())
    assert all(cols[6] == "passed" and cols[8] == "ok" for cols in lines.values())

    # reconciliation found exactly what the provider drift did, in every workspace
    assert {ws: cols[1] for ws, cols in rec.items()} == {"ws_7_0": "GHL", "ws_7_1": "CALENDLY", "ws_7_2": "GHL"}
    assert all(cols[status] == "ok" and cols[rollups] == "passed" for cols in rec.values())
    # "found": this pass found exactly the drift of that workspace ("none" would mean no drift there: Calendly
    # drift needs bookings within reconciliation's ±90-day window, and the shipped sample's dates are fixed)
    assert rec["ws_7_0"][drift] == rec["ws_7_2"][drift] == "found" and rec["ws_7_1"][drift] in ("found", "none")
    assert all(int(cols[checked]) > 50 and int(cols[errors]) == 0 for cols in rec.values())
    texts = summary_lines(first.stdout)
    cancels, reschedules, new_bookings, no_shows = numbers(texts[applied])[1:]
    assert min(cancels, reschedules, new_bookings, no_shows) >= 2  # at least one of each per GHL workspace
    expected = numbers(texts["Drift check"])  # new bookings, cancellations, reschedules, changed; found …; n/n
    found = [sum(int(cols[c]) for cols in rec.values()) for c in (new, canceled, rescheduled, changed)]
    assert expected[:4] == found == expected[4:8]
    assert found[1] == cancels and new_bookings <= found[0] <= new_bookings + reschedules
    assert found[3] >= cancels + new_bookings + no_shows  # the leads touched, but GHL reschedules (same id)
    total = cancels + reschedules + new_bookings + no_shows
    assert expected[8:] == [total, total]  # every drift action is in the appointment history

    # webhooks: other bookings changed at the providers reach the history through signed deliveries, the
    # intake service, webhook_events_sensor and webhook_ingest_job — every action, nothing ignored or failed
    hooks = webhook_table(first.stdout)
    assert set(hooks) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    for cols in hooks.values():
        stored, processed, ignored, failed = map(int, cols[2:6])
        done, actions = map(int, cols[11].split("/"))
        assert processed == stored > 0 and ignored == failed == 0
        assert done == actions > 0 and cols[12] == "found"
        assert cols[13] == "passed" and cols[15] == "ok"
    assert sum(int(cols[8]) for cols in hooks.values()) > 0 and sum(int(cols[10]) for cols in hooks.values()) > 0

    # attribution, availability, one AUTO_BOOK booking per workspace through the HTTP API, capacity: all as runs
    assert "FAILED" not in first.stdout.partition("\nAnalytics and booking")[2]
    booked = bookings(first.stdout)
    assert set(booked) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    assert all(cols[3] == "201" and cols[4] == "booked" for cols in booked.values()), booked
    assert all(cols[-1].endswith(f"/workspaces/{ws}/leads/{cols[1]}/timeline") for ws, cols in booked.items())
    totals = capacity_totals(first.stdout)
    assert set(totals) == {"ws_7_0", "ws_7_1", "ws_7_2"}
    for cols in totals.values():
        booked_slots, available, all_slots = map(int, cols[:3])
        assert available > 100 and booked_slots > 0 and all_slots == booked_slots + available

    # the server is stopped cleanly when the command exits, and its data folder is reused next time
    time.sleep(1)
    assert not postgres_serving(tmp_path / "appt" / "pg")
    second = cli(["demo"], env, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again, rec_again = tables(second.stdout)
    assert {ws: int(cols[2]) for ws, cols in again.items()} == dict.fromkeys(created_first, 0)
    assert {ws: int(cols[3]) for ws, cols in again.items()} == created_first
    # rerun: re-seeded simulators, the same drift, the same leads checked — nothing new, the history has it all
    assert summary_lines(second.stdout)[applied] == texts[applied]
    for ws, cols in rec_again.items():
        assert cols[drift] == {"found": "known", "none": "none"}[rec[ws][drift]]
        assert cols[status] == "ok" and cols[rollups] == "passed"
        assert [int(cols[c]) for c in (changed, new, canceled, rescheduled, errors)] == [0, 0, 0, 0, 0]
        assert cols[checked] == rec[ws][checked] and cols[not_found] == rec[ws][not_found]
        assert int(cols[unchanged]) == int(rec[ws][unchanged]) + int(rec[ws][changed])
    for ws, cols in webhook_table(second.stdout).items():  # redelivered: nothing new, all still in the history
        assert cols[12] == "known" and cols[15] == "ok" and cols[11] == hooks[ws][11]
        assert [int(c) for c in cols[5:10]] == [0, 0, 0, 0, 0]
    # the same Idempotency-Key again: the first answer (a replay), nothing booked twice
    assert {ws: (cols[1], cols[2], cols[3], cols[4], cols[5]) for ws, cols in bookings(second.stdout).items()} == \
        {ws: (cols[1], cols[2], "200", "booked", cols[5]) for ws, cols in booked.items()}
    again_check = numbers(summary_lines(second.stdout)["Drift check"])
    assert again_check[:4] == expected[:4] and again_check[4:8] == [0, 0, 0, 0] and again_check[8:] == [total, total]

    # the demo disconnects the sample workspaces when its simulators stop (tokens deleted, API base URLs back to
    # the providers'), so that the reconciliation schedule skips them instead of calling a stopped simulator
    connections = """
import sqlalchemy as sa
from appt_pipeline.cli.runtime import app_environment
with app_environment() as rt, rt.engine.connect() as conn:
    q = "SELECT count(*) FROM workspace_secrets WHERE workspace_id LIKE 'ws_7_%'"
    print(conn.execute(sa.text(q)).scalar_one())
    for column in ("ghl_api_base_url", "calendly_api_base_url"):
        q = f"SELECT DISTINCT {column} FROM workspaces WHERE id LIKE 'ws_7_%'"
        print(*conn.execute(sa.text(q)).scalars())
"""
    probe = subprocess.run([sys.executable, "-c", connections], env=env, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["0", "https://services.leadconnectorhq.com", "https://api.calendly.com"]
