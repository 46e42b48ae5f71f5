"""The production deployment in deploy/ (docs/operations.md §9), checked as far as this machine can:

- every YAML file parses;
- the production ``dagster.yaml`` validates against Dagster's instance config schema and loads as an instance
  (its storage on a test database), with the repo's run queue (lanes, global cap, backfill share) and pool;
- the Helm values: the shapes the official chart expects for what they set, and the instance config the chart
  renders from them (run coordinator + ``additionalInstanceConfig``) validates against Dagster's schema, with
  the same run queue;
- the Dockerfile's install step is the README's;
- every systemd unit's ``ExecStart`` command exists in this venv and accepts its arguments, and
  ``systemd-analyze verify`` accepts the units;
- the production ``workspace.yaml`` loads the definitions from a gRPC code server started as its unit does.
"""

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema_rs
import pytest
import sqlalchemy as sa
import yaml

from appt_pipeline.cli.runtime import ensure_dagster_home
from appt_pipeline.definitions import defs
from appt_pipeline.settings import PROJECT_ROOT
from appt_pipeline.store.embedded import dagster_url_for, ensure_database
from appt_pipeline_tests.helpers import free_port

DEPLOY = PROJECT_ROOT / "deploy"
BIN = Path(sys.executable).parent
#: where the units expect the checkout and its venv (README "Production")
INSTALL_ROOT = "/opt/appt-pipeline"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_every_yaml_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), PROJECT_ROOT / "dagster.yaml", PROJECT_ROOT / "workspace.yaml"]
    assert {p.relative_to(PROJECT_ROOT).as_posix() for p in files} >= {
        "deploy/dagster.yaml", "deploy/workspace.yaml", "deploy/helm/values.yaml"}
    for path in files:
        assert isinstance(_yaml(path), dict), path


def _concurrency(config: dict[str, Any]) -> dict[str, Any]:
    return config["concurrency"]


def test_the_production_run_queue_is_the_repos() -> None:
    """One run queue everywhere: lanes per workspace and kind, the global cap, the backfill share, the pool."""
    repo = _concurrency(_yaml(PROJECT_ROOT / "dagster.yaml"))
    assert {"key": "appt/lane", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        repo["runs"]["tag_concurrency_limits"])
    assert _concurrency(_yaml(DEPLOY / "dagster.yaml")) == repo
    assert _yaml(DEPLOY / "helm" / "values.yaml")["additionalInstanceConfig"]["concurrency"] == repo


def _validate_instance_config(config: dict[str, Any], home: Path) -> None:
    """Dagster's own validation of an instance config file: ``DagsterInstance.from_config`` checks it against the
    schema of ``dagster.yaml`` (incl. the concurrency rules) and builds every configured class with its config;
    raises ``DagsterInvalidConfigError``. Without ``storage`` the instance keeps SQLite files under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)):
        pass


def test_production_dagster_yaml_validates_and_loads_as_an_instance(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dagster_url = dagster_url_for(database_url)
    ensure_database(dagster_url, sa.make_url(dagster_url).database or "")
    monkeypatch.setenv("APPT_DAGSTER_PG_URL", dagster_url)
    prod = _yaml(DEPLOY / "dagster.yaml")
    # the validator bites: run limits in two places are refused
    broken = {**prod, "run_coordinator": {**prod["run_coordinator"],
                                          "config": {"max_concurrent_runs": 9, "dequeue_interval_seconds": 1}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrent_runs"):
        _validate_instance_config(broken, tmp_path / "broken")
    misspelt = {**prod, "run_monitoring": {**prod["run_monitoring"], "start_timeout_secs": 180}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        _validate_instance_config(misspelt, tmp_path / "misspelt")

    # installed the way the units do it (APPT_DAGSTER_YAML, `appt-pipeline db upgrade`), then loaded
    monkeypatch.setenv("APPT_DAGSTER_YAML", str(DEPLOY / "dagster.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    home = ensure_dagster_home()
    assert (home / "dagster.yaml").read_bytes() == (DEPLOY / "dagster.yaml").read_bytes()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        limits = instance.get_concurrency_config().run_queue_config
        assert limits is not None and limits.max_concurrent_runs == 4
        assert {"key": "appt/lane", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            limits.tag_concurrency_limits)
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
        assert instance.run_monitoring_enabled


def test_ensure_dagster_home_refuses_a_missing_instance_config(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPT_DAGSTER_YAML", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="APPT_DAGSTER_YAML"):
        ensure_dagster_home()


#: The shapes the official chart (dagster/dagster 1.13) gives the values this file sets (its values.schema.json
#: names them; not vendored here): enough to catch a misspelt or misplaced key of ours.
_IMAGE = {"type": "object", "required": ["repository", "tag", "pullPolicy"],
          "properties": {"repository": {"type": "string"}, "tag": {"type": "string"},
                         "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}}
_SECRETS = {"type": "array", "items": {"type": "object", "required": ["name"]}}
HELM_VALUES_SHAPE = {
    "type": "object",
    "required": ["dagster-user-deployments", "postgresql", "runLauncher", "dagsterDaemon", "additionalInstanceConfig"],
    "properties": {
        "dagsterWebserver": {"type": "object", "properties": {"replicaCount": {"type": "integer"},
                                                              "envSecrets": _SECRETS}},
        "dagster-user-deployments": {
            "type": "object", "required": ["enabled", "enableSubchart", "deployments"],
            "properties": {"enabled": {"const": True}, "enableSubchart": {"const": True}, "deployments": {
                "type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "image", "port", "codeServerArgs"],
                    "properties": {"name": {"type": "string"}, "image": _IMAGE, "port": {"type": "integer"},
                                   "codeServerArgs": {"type": "array", "items": {"type": "string"}},
                                   "envSecrets": _SECRETS,
                                   "includeConfigInLaunchedRuns": {"type": "object", "required": ["enabled"]}}}}}},
        "postgresql": {
            "type": "object",
            "required": ["enabled", "postgresqlHost", "postgresqlUsername", "postgresqlDatabase", "service"],
            "properties": {"enabled": {"const": False}, "postgresqlHost": {"type": "string"},
                           "postgresqlParams": {"type": "object"},
                           "service": {"type": "object", "required": ["port"],
                                       "properties": {"port": {"type": "integer"}}}}},
        "generatePostgresqlPasswordSecret": {"const": False},
        "runLauncher": {
            "type": "object", "required": ["type", "config"],
            "properties": {"type": {"const": "K8sRunLauncher"}, "config": {
                "type": "object", "required": ["k8sRunLauncher"], "properties": {"k8sRunLauncher": {
                    "type": "object",
                    "required": ["imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars",
                                 "volumeMounts", "volumes"],
                    "properties": {"envSecrets": _SECRETS, "loadInclusterConfig": {"type": "boolean"}}}}}}},
        "dagsterDaemon": {
            "type": "object", "required": ["enabled", "runCoordinator"],
            "properties": {
                "enabled": {"const": True},
                "runCoordinator": {"type": "object", "required": ["enabled", "type", "config"], "properties": {
                    "enabled": {"const": True}, "type": {"const": "QueuedRunCoordinator"},
                    "config": {"type": "object", "required": ["queuedRunCoordinator"]}}},
                "schedules": {"type": "object", "required": ["useThreads"]},
                "sensors": {"type": "object", "required": ["useThreads"]},
                "runMonitoring": {"type": "object"}}},
        "additionalInstanceConfig": {"type": "object"},
        "telemetry": {"type": "object", "required": ["enabled"]},
    },
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def test_helm_values_have_the_charts_shapes_and_render_a_valid_instance_config(tmp_path: Path) -> None:
    values = _yaml(DEPLOY / "helm" / "values.yaml")
    errors = [e.message for e in jsonschema_rs.validator_for(HELM_VALUES_SHAPE).iter_errors(values)]
    assert errors == []
    # a key in the wrong place is caught
    wrong = {**values, "runLauncher": {"type": "K8sRunLauncher", "config": {"k8s": {}}}}
    assert not jsonschema_rs.validator_for(HELM_VALUES_SHAPE).is_valid(wrong)

    # the user deployment serves our code location on the image's port
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert args[args.index("--module-name") + 1] == "appt_pipeline.definitions"
    assert f"EXPOSE {deployment['port']}" in (DEPLOY / "Dockerfile").read_text()
    # the schedules and sensors are on: the definitions declare them RUNNING, the daemon evaluates them
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules or [])
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors or [])

    # the instance config the chart renders: run coordinator from the daemon values, + additionalInstanceConfig
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    rendered = {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {_snake(k): v for k, v in queued.items()}},
        "run_monitoring": {_snake(k): v for k, v in values["dagsterDaemon"]["runMonitoring"].items()},
        "telemetry": values["telemetry"],
        **values["additionalInstanceConfig"],
    }
    _validate_instance_config(rendered, tmp_path / "helm")
    # and the chart's own limits beside `concurrency` would be refused, which is why there are none
    both = {**rendered, "run_coordinator": {**rendered["run_coordinator"], "config": {
        **rendered["run_coordinator"]["config"], "tag_concurrency_limits": [{"key": "x", "limit": 1}]}}}
    with pytest.raises(dg.DagsterInvalidConfigError):
        _validate_instance_config(both, tmp_path / "helm_both")


def _readme_install_step() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    pattern = r"^(python3 -m venv \.venv && \.venv/bin/pip install [^\n]*?) && \.venv/bin/appt-pipeline demo$"
    [step] = re.findall(pattern, readme, re.MULTILINE)
    return step


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_the_dockerfile_installs_as_the_readme_says() -> None:
    instructions = _dockerfile_instructions()
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert _readme_install_step() in runs
    # the image's only other install: the pinned dagster-k8s set, of the same Dagster release
    assert ".venv/bin/pip install -q -r deploy/requirements-k8s.lock" in runs
    pins = dict(line.split("==") for line in (DEPLOY / "requirements-k8s.lock").read_text().splitlines()
                if line and not line.startswith("#"))
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    assert f"dagster-postgres=={pins['dagster-k8s']}" in lock
    # everything the install needs is copied in, and exists
    copied = [part for word, rest in instructions if word == "COPY" for part in rest.split()[:-1]]
    for needed in ("requirements.lock", "pyproject.toml", "appt_pipeline", "sql", "deploy"):
        assert needed in copied
    for part in copied:
        assert (PROJECT_ROOT / part).exists(), part
    dockerignore = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert ".venv/" in dockerignore


def _exec_start(unit: Path) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return shlex.split(parser["Service"]["ExecStart"])


def test_the_units_cover_the_vm_install() -> None:
    commands = {unit.name: _exec_start(unit)[0].rsplit("/", 1)[-1] for unit in UNITS}
    assert commands == {"appt-code-server.service": "dagster", "appt-dagster-daemon.service": "dagster-daemon",
                        "appt-dagster-webserver.service": "dagster-webserver",
                        "appt-db-upgrade.service": "appt-pipeline", "appt-intake.service": "appt-pipeline",
                        "appt-worker@.service": "appt-pipeline"}
    for unit in UNITS:
        text = unit.read_text()
        assert "EnvironmentFile=/etc/appt-pipeline/appt-pipeline.env" in text, unit.name
        for path in re.findall(rf"{INSTALL_ROOT}/(deploy/\S+)", text):
            assert (PROJECT_ROOT / path).is_file(), (unit.name, path)


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_a_units_command_exists_and_accepts_its_arguments(unit: Path) -> None:
    """The unit's program is a console script of this venv, and its command line parses (``--help`` appended:
    an unknown subcommand or option fails before help is printed)."""
    argv = _exec_start(unit)
    assert argv[0].startswith(f"{INSTALL_ROOT}/.venv/bin/"), argv[0]
    program = BIN / argv[0].rsplit("/", 1)[-1]
    assert program.is_file() and os.access(program, os.X_OK), program
    proc = subprocess.run([str(program), *argv[1:], "--help"], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())
    if unit.name == "appt-worker@.service" and "No such command 'worker'" in proc.stderr:
        pytest.xfail("`appt-pipeline worker` is issue 13 item 6 (Celery scale-out), not merged yet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Usage" in proc.stdout


def test_systemd_verifies_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (syntax, known keys, dependencies, executables) on the units, with the install
    root mapped to this checkout and its venv; the template unit as instance ``appt-worker@1``."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copies = []
    for unit in UNITS:
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(unit.read_text().replace(INSTALL_ROOT, str(PROJECT_ROOT)))
        copies.append(str(tmp_path / name))
    proc = subprocess.run([analyze, "verify", "--man=no", *copies], capture_output=True, text=True, timeout=120)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and "Unknown" not in output, output


def test_the_workspace_yaml_loads_the_definitions_from_a_grpc_code_server(tmp_path: Path) -> None:
    argv = _exec_start(DEPLOY / "systemd" / "appt-code-server.service")
    workspace = _yaml(DEPLOY / "workspace.yaml")
    [server] = [entry["grpc_server"] for entry in workspace["load_from"]]
    assert argv[argv.index("-p") + 1] == str(server["port"]) and argv[argv.index("-h") + 1] == server["host"]
    port = free_port()
    argv[argv.index("-p") + 1] = str(port)
    server["port"] = port
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    log = (tmp_path / "code-server.log").open("w")
    code_server = subprocess.Popen([str(BIN / "dagster"), *argv[1:]], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        for _ in range(120):
            assert code_server.poll() is None, (tmp_path / "code-server.log").read_text()[-3000:]
            if subprocess.run(health, capture_output=True, timeout=60, env=env).returncode == 0:
                break
        else:
            pytest.fail("the code server never answered its health check")
        listed = subprocess.run([str(BIN / "dagster"), "job", "list", "-w", str(tmp_path / "workspace.yaml")],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr[-3000:]
        jobs = set(re.findall(r"^Job: (\S+)$", listed.stdout, re.MULTILINE)) - {"__ASSET_JOB"}
        assert jobs >= {"migration_job", "reconciliation_job", "webhook_ingest_job", "attribution_backfill_job"}
        assert jobs == {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    finally:
        os.killpg(code_server.pid, signal.SIGTERM)
        try:
            code_server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(code_server.pid, signal.SIGKILL)
            code_server.wait()
        log.close()
