"""The auditors' tools: `kim audit replay`, `kim audit verify`, `kim audit access-log` (interfaces.md §7)."""
