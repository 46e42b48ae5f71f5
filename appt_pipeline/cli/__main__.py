"""``python -m appt_pipeline.cli`` runs the ``appt-pipeline`` command line (docs/operations.md §3)."""

from appt_pipeline.cli.commands import main

if __name__ == "__main__":
    main()
