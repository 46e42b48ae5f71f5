"""Builders of legacy CRM exports (``workspaces.csv`` + ``leads.csv``, docs/operations.md §2) for tests."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from appt_pipeline.sample.generator import LEADS_HEADER, WORKSPACES_HEADER

GOOD_LEADS = 300  #: the bad row comes after many good ones: none of them may be written


def write_csv(path: Path, header: Iterable[str], records: Iterable[Mapping[str, Any] | list[Any]]) -> Path:
    """Write a CSV in the legacy format (header row, empty cell = NULL); dict records fill missing columns."""
    header = list(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for rec in records:
            if isinstance(rec, Mapping):
                unknown = set(rec) - set(header)
                assert not unknown, f"test bug: columns {unknown} not in header"
                w.writerow(["" if rec.get(h) is None else rec.get(h) for h in header])
            else:
                w.writerow(rec)
    return path


def write_legacy(
    folder: Path,
    leads: Iterable[Mapping[str, Any]] | None = None,
    workspaces: Iterable[Mapping[str, Any]] | None = None,
) -> Path:
    """A legacy export folder with ``workspaces.csv`` and/or ``leads.csv`` in the fixture's column order."""
    folder.mkdir(parents=True, exist_ok=True)
    if workspaces is not None:
        write_csv(folder / "workspaces.csv", WORKSPACES_HEADER, workspaces)
    if leads is not None:
        write_csv(folder / "leads.csv", LEADS_HEADER, leads)
    return folder


def ws_row(ws_id: str, provider: str = "GHL", **kw: Any) -> dict[str, Any]:
    return {"id": ws_id, "name": f"Workspace {ws_id}", "meeting_booking_provider": provider,
            "meeting_duration_minutes": 30, **kw}


def lead_row(lead_id: str, ws_id: str = "ws_a", **kw: Any) -> dict[str, Any]:
    return {"id": lead_id, "workspace_id": ws_id, "status": "qualified", "email": f"{lead_id.strip()}@example.com",
            **kw}
