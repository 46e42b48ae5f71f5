"""The test database fixture refuses to wait for a session an earlier test left open (issue 10 item 7): the next
test fails within seconds, naming the test that opened it, instead of hanging in TRUNCATE for minutes. Proven on
an inner pytest run (pytester, in a subprocess) of two tests using this project's fixtures."""

import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER = '''
import sqlalchemy as sa

HELD = []


def test_leaves_a_transaction_open(db):
    conn = db.connect()
    conn.exec_driver_sql("LOCK TABLE leads IN SHARE MODE")  # idle in transaction, holding a lock, never closed
    HELD.append(conn)


def test_next_one(db):
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one() == 0
'''


def test_a_leaked_session_fails_the_next_test_fast_and_names_its_test(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # the tests are not installed
    pytester.makeconftest('pytest_plugins = ["appt_pipeline_tests.conftest"]\n')
    pytester.makepyfile(test_inner=INNER)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", timeout=120)
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*sessions left open by an earlier test*",
                                 "*application_name='test_inner.py::test_leaves_a_transaction_open'*"])
    assert elapsed < 60, elapsed  # the grace period is seconds, never the lock timeout of minutes
