"""CI step: `dagster definitions validate` on the code location, against a real PostgreSQL.

``dagster.yaml`` reads the instance storage URL from ``APPT_DAGSTER_PG_URL``, so validation needs a
database. The PostgreSQL on 127.0.0.1:5432 is used when it accepts ``postgres`` without a password
(database ``appt_ci``, created when missing), else the project's embedded server; ``APPT_DATABASE_URL``
set by the caller wins. ``DAGSTER_HOME`` is a temporary directory holding the project's ``dagster.yaml``.
Exit status is the validator's.
"""

import os
import subprocess
import sys
import tempfile

import psycopg

from appt_pipeline.cli.runtime import app_environment
from appt_pipeline.settings import DATABASE_URL_ENV, PROJECT_ROOT

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CI_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/appt_ci"


def _local_server_up() -> bool:
    try:
        psycopg.connect(LOCAL_SERVER, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def main() -> int:
    if not os.environ.get(DATABASE_URL_ENV) and _local_server_up():
        os.environ[DATABASE_URL_ENV] = CI_DATABASE
    with tempfile.TemporaryDirectory(prefix="appt-ci-dagster-") as home:
        os.environ["DAGSTER_HOME"] = home
        with app_environment(create=True) as runtime:  # as `db upgrade` does: CI owns this database
            print(f"ci: {runtime.describe()}", file=sys.stderr)
            cmd = [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "appt_pipeline.definitions"]
            return subprocess.run(cmd, cwd=PROJECT_ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
