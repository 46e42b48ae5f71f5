"""Concurrent writers on a real PostgreSQL (SPEC §4): overlapping batches of thousands of observations — same
keys, shared leads, keys moving between leads — end with no error, one row per provider key and no rollup drift.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import sqlalchemy as sa

from appt_pipeline.domain.observation import Observation
from appt_pipeline.domain.primary import build_rollup, select_primary
from appt_pipeline.domain.vocab import Source, Status
from appt_pipeline.store.rollups import ROLLUP_COLUMNS, drift_report
from appt_pipeline.store.write_path import write_observations
from appt_pipeline_tests.helpers import REF, ApptRow, calendly, ghl, rows, seed

NOW = REF
# (batches, observations per batch) of each writer: bulk writers (reconciliation, migration-like) that lock most
# leads, and webhook-like writers with small batches over few leads, racing on new keys and key moves
WRITERS = [(2, 1000), (2, 1000), (2, 1000), (40, 25), (40, 25), (40, 25)]
LEADS = 300
GHL_KEYS = 1500
CAL_KEYS = 600
TIMES = [NOW + timedelta(hours=h) for h in (-72, -30, -5, 5, 30, 72, 200)]


def _batch(rng: random.Random, leads: list[str], size: int) -> list[Observation]:
    batch = []
    for _ in range(size):
        key = rng.randrange(GHL_KEYS + CAL_KEYS)
        # keys mostly stay with "their" lead, sometimes move to another one
        home = leads[key % LEADS] if rng.random() < 0.8 else rng.choice(leads)
        kw = {
            "status": rng.choice(list(Status)),
            "source": rng.choice([Source.WEBHOOK, Source.RECONCILE_CRON, Source.WEBHOOK, Source.BACKFILL]),
            "start_at": rng.choice(TIMES),
            "provider_updated_at": rng.choice([None, NOW - timedelta(minutes=rng.randrange(1, 600))]),
        }
        if key < GHL_KEYS:
            batch.append(ghl(home, f"g{key}", **kw))
        else:
            batch.append(calendly(home, f"c{key}", **kw))
    return batch


def test_concurrent_overlapping_writers(db: sa.Engine) -> None:
    leads = seed(db, leads=LEADS)
    errors: list[BaseException] = []
    results_errors: list[str] = []
    barrier = threading.Barrier(len(WRITERS))

    def writer(seed_: int) -> None:
        rng = random.Random(seed_)
        count, size = WRITERS[seed_]
        batches = [_batch(rng, leads, size) for _ in range(count)]
        barrier.wait()
        try:
            for batch in batches:
                for r in write_observations(db, batch, now=NOW):
                    if r.error_kind:
                        results_errors.append(r.error_kind)
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(len(WRITERS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads)
    assert errors == [] and results_errors == []

    duplicates = rows(db, """
        SELECT coalesce(ghl_appointment_id, calendly_invitee_uri) AS k, count(*) AS n FROM appointments
        GROUP BY 1 HAVING count(*) > 1""")
    assert duplicates == []
    assert rows(db, "SELECT count(*) AS n FROM appointments")[0].n > GHL_KEYS  # most keys were seen
    with db.connect() as conn:
        report = drift_report(conn, "ws1", NOW)
    assert report.drifted == 0, report.sample_lead_ids
    # independently in Python: every lead's rollup is the rollup of its primary
    appts: dict[str, list[ApptRow]] = {}
    for r in rows(db, "SELECT * FROM appointments"):
        appts.setdefault(r.lead_id, []).append(ApptRow.of(r))
    for lead_row in rows(db, "SELECT * FROM leads"):
        expected = build_rollup(select_primary(appts.get(lead_row.id, []), NOW))
        assert tuple(getattr(lead_row, c) for c in ROLLUP_COLUMNS) == tuple(
            getattr(expected, c) for c in ROLLUP_COLUMNS), lead_row.id
    # one pending task per lead and type at most (the unique index held under concurrency)
    assert rows(db, "SELECT lead_id, type FROM follow_up_tasks WHERE status = 'pending' "
                    "GROUP BY 1, 2 HAVING count(*) > 1") == []
    assert elapsed < 60
