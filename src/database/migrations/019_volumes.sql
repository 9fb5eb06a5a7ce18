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

ALTER TABLE tasks ADD COLUMN volume_id TEXT;
CREATE UNIQUE INDEX tasks_one_active_per_volume ON tasks (volume_id)
    WHERE status IN ('queued', 'running') AND volume_id IS NOT NULL;
CREATE INDEX tasks_volume_created ON tasks (volume_id, created_at) WHERE volume_id IS NOT NULL;

ALTER TABLE projects ADD COLUMN quota_volumes INTEGER;
ALTER TABLE projects ADD COLUMN quota_volumes_gb INTEGER;
UPDATE projects SET quota_volumes = 10, quota_volumes_gb = 1000;
