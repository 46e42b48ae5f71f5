"""Shipped demo data: a legacy CRM export made by :mod:`appt_pipeline.sample.generator` (defaults)."""

from pathlib import Path

#: Folder holding the shipped ``workspaces.csv`` and ``leads.csv`` (3 workspaces, 3000 leads, seed 7).
SAMPLE_DIR: Path = Path(__file__).resolve().parent / "legacy"

__all__ = ["SAMPLE_DIR"]
