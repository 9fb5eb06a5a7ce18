-- Tasks carry what their work needs (so any process can run them), count their attempts (a
-- task redelivered after its worker died starts again from a clean host), and wait in an outbox
-- until the relay has handed them to the broker (published_at).
ALTER TABLE tasks ADD COLUMN payload TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tasks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN published_at TEXT;
ALTER TABLE tasks ADD COLUMN executor TEXT NOT NULL DEFAULT 'inprocess';
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE published_at IS NULL AND status = 'queued' AND executor = 'celery';
-- One holder at a time of each lease (the periodic sweep, whatever the number of workers).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
