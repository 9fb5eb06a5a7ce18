-- Volumes: block devices that outlive VMs (issue 22). A volume lives on one host as a chain of
-- qcow2 layers in that host's volume pool: the newest layer (top) takes the writes, older ones
-- are frozen by snapshots. A VM's root disk takes snapshots the same way. The chain is ours:
-- libvirt never holds snapshot metadata (it would refuse to migrate the VM).
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project TEXT NOT NULL,
    size_gb INTEGER NOT NULL CHECK (size_gb > 0),
    status TEXT NOT NULL,
    multiattach INTEGER NOT NULL DEFAULT 0,
    host TEXT NOT NULL,
    source_image_id TEXT,
    source_image_name TEXT,
    top_layer TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (project, name)
);
CREATE INDEX volumes_host ON volumes (host);

-- One row per (volume, VM); attaching and detaching rows are the tasks' work under way.
CREATE TABLE volume_attachments (
    volume_id TEXT NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
    vm_id TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    read_only INTEGER NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (volume_id, vm_id),
    UNIQUE (vm_id, device)
);
CREATE INDEX volume_attachments_vm ON volume_attachments (vm_id);

-- The files of chains, by owner (a volume or a VM): each backed by its parent, a layer of the
-- same owner (NULL: the bottom of the chain).
CREATE TABLE disk_layers (
    host TEXT NOT NULL,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    parent TEXT,
    size_gb INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);

-- A snapshot names the frozen layer holding its bytes; of a volume or of a VM's root disk.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('volume', 'vm')),
    project TEXT NOT NULL,
    layer TEXT,
    size_gb INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (owner, name)
);

-- A VM's root disk after a snapshot or a revert: the layer its domain boots (none: as built).
CREATE TABLE root_disk_tops (
    vm_id TEXT PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    layer TEXT NOT NULL
);

-- A task may now name a volume instead of a VM or an image (a volume's task; an attachment's
-- names both VM and volume). SQLite cannot change a CHECK: the table is rebuilt, with its
-- indexes and triggers as they were.
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
    payload       TEXT NOT NULL DEFAULT '{}',
    attempts      INTEGER NOT NULL DEFAULT 0,
    published_at  TEXT,
    executor      TEXT NOT NULL DEFAULT 'inprocess',
    volume_id     TEXT,
    CHECK (vm_id IS NOT NULL OR image_id IS NOT NULL OR volume_id IS NOT NULL)
);
INSERT INTO tasks_new (id, vm_id, action, status, error_code, error_message, created_at,
                       started_at, finished_at, request_id, deadline, project, host, image_id,
                       payload, attempts, published_at, executor)
    SELECT id, vm_id, action, status, error_code, error_message, created_at, started_at,
           finished_at, request_id, deadline, project, host, image_id, payload, attempts,
           published_at, executor FROM tasks;
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
CREATE INDEX tasks_unpublished ON tasks (created_at)
    WHERE published_at IS NULL AND status = 'queued' AND executor = 'celery';
CREATE TRIGGER task_latency_started AFTER UPDATE OF status ON tasks
    WHEN OLD.status = 'queued' AND NEW.status = 'running' BEGIN
    INSERT INTO task_latency (phase, action, executor, le, count, sum)
        SELECT 'queued', NEW.action, NEW.executor, le, 1,
               (julianday(NEW.started_at) - julianday(NEW.created_at)) * 86400
        FROM latency_buckets
        WHERE le >= (julianday(NEW.started_at) - julianday(NEW.created_at)) * 86400
        ON CONFLICT (phase, action, executor, le)
        DO UPDATE SET count = count + 1, sum = sum + excluded.sum;
END;
CREATE TRIGGER task_latency_finished AFTER UPDATE OF status ON tasks
    WHEN OLD.status = 'running' AND NEW.status IN ('succeeded', 'failed') BEGIN
    INSERT INTO task_latency (phase, action, executor, le, count, sum)
        SELECT 'running', NEW.action, NEW.executor, le, 1,
               (julianday(NEW.finished_at) - julianday(NEW.started_at)) * 86400
        FROM latency_buckets
        WHERE le >= (julianday(NEW.finished_at) - julianday(NEW.started_at)) * 86400
        ON CONFLICT (phase, action, executor, le)
        DO UPDATE SET count = count + 1, sum = sum + excluded.sum;
END;
-- One volume task at a time; attaches and detaches (one per VM, which they hold) run beside
-- each other, and the services refuse a volume task while any of them runs.
CREATE UNIQUE INDEX tasks_one_active_per_volume ON tasks (volume_id)
    WHERE status IN ('queued', 'running') AND volume_id IS NOT NULL
    AND action NOT IN ('attach', 'detach');
CREATE INDEX tasks_volume_created ON tasks (volume_id, created_at) WHERE volume_id IS NOT NULL;

-- Projects made before volumes have no volume limits until an admin sets them (as disk_gb and
-- images_gb came); new ones get IAAS_DEFAULT_QUOTA_VOLUMES and _VOLUMES_GB.
ALTER TABLE projects ADD COLUMN quota_volumes INTEGER;
ALTER TABLE projects ADD COLUMN quota_volumes_gb INTEGER;
