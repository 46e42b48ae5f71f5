"""Workspace partitions: one dynamic partition per ``workspaces.id`` (DESIGN.md, Dagster model)."""

import dagster as dg

workspace_partitions = dg.DynamicPartitionsDefinition(name="workspace")
