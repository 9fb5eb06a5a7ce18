"""Cross-cutting actions over every wing: running any task, reconciliation, telemetry, orphans, retention."""
