"""``python -m appt_pipeline.cli``: the ``appt-pipeline`` command line."""

from appt_pipeline.cli.commands import main

main()
