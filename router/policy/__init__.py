"""YAML routing policies: schema, loading, compiled snapshots and live reload."""
