"""The end-to-end tests' command runner: ``python -m appt_pipeline.cli`` as a real subprocess, and the embedded
PostgreSQL processes serving a data folder."""

import subprocess
import sys
from pathlib import Path

import psutil

CLI = [sys.executable, "-m", "appt_pipeline.cli"]


def cli(args: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def postgres_serving(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found
