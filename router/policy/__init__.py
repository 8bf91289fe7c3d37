"""YAML routing policies: loading, compiled snapshots and live reload (the vocabulary is `router.schema`)."""
