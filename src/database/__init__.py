"""SQLite persistence: connection handling, migrations and one DAO module per table."""
