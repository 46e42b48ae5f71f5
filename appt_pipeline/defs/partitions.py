"""Workspace partitions: one dynamic partition per ``workspaces.id`` (docs/operations.md §4)."""

import dagster as dg

workspace_partitions = dg.DynamicPartitionsDefinition(name="workspace")
