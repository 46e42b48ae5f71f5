"""The ``appt-pipeline`` command line (SPEC §12): commands, run launching and the process runtime."""

from appt_pipeline.cli.commands import main

__all__ = ["main"]
