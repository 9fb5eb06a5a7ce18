-- Evacuations of VMs off a host that is down (issue 24). One row per evacuate task: the dead
-- host the VM leaves (`source`), the host it is rebuilt on (`target`), the claim it holds there
-- meanwhile (counted by capacity until it commits), how far it got, what it made on the target
-- (removed again when it rolls back), and, once committed, whether the dead host still holds a
-- stale copy of the VM (its domain and files) for the reconciler to remove when it returns.
-- No foreign key to vms: a VM deleted after its evacuation still leaves a stale copy to clean.
CREATE TABLE vm_evacuations (
    task_id       TEXT PRIMARY KEY,
    vm_id         TEXT NOT NULL,
    vm_name       TEXT NOT NULL,
    source        TEXT NOT NULL,
    target        TEXT NOT NULL,
    -- queued, building, done (the rows moved), rolled_back
    phase         TEXT NOT NULL,
    -- 1: the VM keeps its disks and volumes (the hosts share storage); 0: a fresh root disk
    -- from the base image (rebuild_lost_disks), its volumes left detached on the dead host
    keeps_disks   INTEGER NOT NULL,
    start         INTEGER NOT NULL,  -- whether it runs once rebuilt (it ran or was paused)
    cpu           INTEGER NOT NULL,
    ram           INTEGER NOT NULL,
    disk_gb       INTEGER NOT NULL,
    numa_node     INTEGER,
    node_cpus     TEXT NOT NULL DEFAULT '[]',
    pinned_cpus   TEXT NOT NULL DEFAULT '[]',
    -- the volumes left behind on the dead host, detached: [{"volume_id", "name", "device"}]
    lost_volumes  TEXT NOT NULL DEFAULT '[]',
    made          TEXT NOT NULL DEFAULT '[]',
    error_code    TEXT,
    -- set when the VM is rebuilt: the dead host holds its old domain (and, unless the hosts
    -- share storage, its old disks) until the reconciler removes them; then stale_cleaned_at
    stale_on      TEXT,
    stale_cleaned_at TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX vm_evacuations_one_active ON vm_evacuations (vm_id)
    WHERE phase IN ('queued', 'building');
CREATE INDEX vm_evacuations_stale ON vm_evacuations (stale_on) WHERE stale_cleaned_at IS NULL;

-- A host's last evacuation: when, with which flag, and the VMs it could not rebuild (why).
CREATE TABLE host_evacuations (
    host               TEXT PRIMARY KEY,
    started_at         TEXT NOT NULL,
    rebuild_lost_disks INTEGER NOT NULL,
    -- [{"task_id", "vm_id", "vm", "target"}]
    tasks              TEXT NOT NULL DEFAULT '[]',
    -- [{"vm_id", "vm", "reason", "message"}]
    skipped            TEXT NOT NULL DEFAULT '[]'
);
