-- The platform's first schema: installation metadata, images, VMs and their tasks.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE images (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    file               TEXT NOT NULL,
    format             TEXT NOT NULL CHECK (format IN ('qcow2', 'raw')),
    size_bytes         INTEGER,
    virtual_size_bytes INTEGER,
    created_at         TEXT NOT NULL
);

CREATE TABLE vms (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    cpu           INTEGER NOT NULL,
    ram           INTEGER NOT NULL,
    disk_gb       INTEGER NOT NULL,
    image_id      TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    status        TEXT NOT NULL,
    vnc_port      INTEGER,
    ip_addresses  TEXT NOT NULL DEFAULT '[]',
    error_code    TEXT,
    error_message TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX vms_created ON vms (created_at, id);
CREATE INDEX vms_image ON vms (image_id);

CREATE TABLE tasks (
    id            TEXT PRIMARY KEY,
    vm_id         TEXT NOT NULL,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error_code    TEXT,
    error_message TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE INDEX tasks_vm ON tasks (vm_id, status);
