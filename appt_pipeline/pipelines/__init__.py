"""Pipelines: provider evidence → observations → the one write path (reconciliation, webhook ingestion,
attribution backfill) and the provider accounts they share. Imports ``store``, ``providers``, ``domain``;
never ``defs``, ``service`` or ``cli``."""
