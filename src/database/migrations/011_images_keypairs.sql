-- Images come in by upload or URL import and belong to a project (public or private), with a
-- status; tasks may be an image's (an import) instead of a VM's; keypairs per project; the
-- images_gb quota.
-- Image names are unique per project (another project's private names must not clash, which
-- would reveal them) and among public images. SQLite cannot drop the UNIQUE of name, so images
-- is rebuilt (Database.migrate runs this with foreign keys off and checks them before commit).
CREATE TABLE images_new (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    file               TEXT NOT NULL,
    format             TEXT NOT NULL CHECK (format IN ('qcow2', 'raw')),
    size_bytes         INTEGER,
    virtual_size_bytes INTEGER,
    created_at         TEXT NOT NULL,
    sha256             TEXT,
    project            TEXT NOT NULL DEFAULT 'default',
    visibility         TEXT NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    status             TEXT NOT NULL DEFAULT 'active'
                       CHECK (status IN ('pending', 'importing', 'active', 'error')),
    origin             TEXT NOT NULL DEFAULT 'file' CHECK (origin IN ('file', 'upload', 'import')),
    expected_sha256    TEXT,
    source_url         TEXT,
    error_code         TEXT,
    error_message      TEXT,
    bytes_done         INTEGER,
    bytes_total        INTEGER,
    task_id            TEXT,
    UNIQUE (project, name)
);
INSERT INTO images_new (id, name, file, format, size_bytes, virtual_size_bytes, created_at, sha256)
SELECT id, name, file, format, size_bytes, virtual_size_bytes, created_at, sha256 FROM images;
DROP TABLE images;
ALTER TABLE images_new RENAME TO images;
CREATE UNIQUE INDEX images_public_name ON images (name) WHERE visibility = 'public';
CREATE INDEX images_project ON images (project);
-- A task belongs to a VM or (an import) to an image. SQLite cannot relax NOT NULL on vm_id, so
-- tasks is rebuilt with its indexes and the triggers that keep task_counts.
DROP TRIGGER task_counts_insert;
DROP TRIGGER task_counts_update;
DROP TRIGGER task_counts_delete;
CREATE TABLE tasks_new (
    id            TEXT PRIMARY KEY,
    vm_id         TEXT,
    action        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error_code    TEXT,
    error_message TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    request_id    TEXT,
    deadline      TEXT,
    project       TEXT NOT NULL DEFAULT 'default',
    host          TEXT,
    image_id      TEXT,
    CHECK (vm_id IS NOT NULL OR image_id IS NOT NULL)
);
INSERT INTO tasks_new (id, vm_id, action, status, error_code, error_message, created_at,
                       started_at, finished_at, request_id, deadline, project, host)
SELECT id, vm_id, action, status, error_code, error_message, created_at, started_at,
       finished_at, request_id, deadline, project, host FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_vm ON tasks (vm_id, status);
CREATE UNIQUE INDEX tasks_one_active_per_vm ON tasks (vm_id) WHERE status IN ('queued', 'running');
CREATE INDEX tasks_vm_created ON tasks (vm_id, created_at);
CREATE INDEX tasks_running_deadline ON tasks (deadline) WHERE status = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('succeeded', 'failed');
CREATE INDEX tasks_image ON tasks (image_id) WHERE image_id IS NOT NULL;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts (action, status, count) VALUES (NEW.action, NEW.status, 1)
        ON CONFLICT (action, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER task_counts_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status != NEW.status BEGIN
    UPDATE task_counts SET count = count - 1 WHERE action = OLD.action AND status = OLD.status;
    INSERT INTO task_counts (action, status, count) VALUES (NEW.action, NEW.status, 1)
        ON CONFLICT (action, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET count = count - 1 WHERE action = OLD.action AND status = OLD.status;
END;
-- SSH public keys a project keeps to put in its VMs by name.
CREATE TABLE keypairs (
    project     TEXT NOT NULL,
    name        TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (project, name)
);
-- Stored image bytes per project; existing projects other than default get no limit until an
-- admin sets one (as disk_gb came).
ALTER TABLE projects ADD COLUMN quota_images_gb INTEGER;
