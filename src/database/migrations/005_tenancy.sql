-- Projects own VMs. Tokens (stored only as SHA-256 hashes) act for one project with one role.
CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
INSERT INTO projects (name, created_at) VALUES ('default', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL REFERENCES projects(name),
    role        TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    secret_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
ALTER TABLE vms ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
ALTER TABLE tasks ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
CREATE INDEX vms_project ON vms(project);
