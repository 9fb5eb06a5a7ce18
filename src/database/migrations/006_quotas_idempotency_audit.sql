-- Quotas per project (NULL: unlimited), idempotency keys, and the audit trail.
ALTER TABLE projects ADD COLUMN quota_instances INTEGER;
ALTER TABLE projects ADD COLUMN quota_vcpus INTEGER;
ALTER TABLE projects ADD COLUMN quota_ram INTEGER;
ALTER TABLE projects ADD COLUMN quota_gpus INTEGER;
CREATE TABLE idempotency_keys (
    project      TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER,          -- NULL while the first request is still being answered
    response     TEXT,             -- JSON {body, headers, content_type}
    created_at   TEXT NOT NULL,
    PRIMARY KEY (project, key)
);
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    project     TEXT,
    token_id    TEXT,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    request_id  TEXT NOT NULL,
    resource_id TEXT
);
CREATE INDEX audit_events_project ON audit_events(project, id);
