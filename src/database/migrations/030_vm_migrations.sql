-- Migrations of VMs between hosts (issue 24). One row per migrate task: where the VM goes, the
-- claim it holds on the target meanwhile (counted by capacity until the move commits), which
-- step it is at, and every file it has made on the target (removed again when it rolls back).
-- The VM's own row says where it runs until the commit, which moves it in one transaction.
CREATE TABLE vm_migrations (
    task_id     TEXT PRIMARY KEY,
    vm_id       TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    source      TEXT NOT NULL,
    target      TEXT NOT NULL,
    live        INTEGER NOT NULL,
    -- queued, preparing, transferring, committed (the rows moved; the source is cleaned),
    -- done, rolled_back
    phase       TEXT NOT NULL,
    was_running INTEGER NOT NULL DEFAULT 0,
    cpu         INTEGER NOT NULL,
    ram         INTEGER NOT NULL,
    disk_gb     INTEGER NOT NULL,
    numa_node   INTEGER,
    node_cpus   TEXT NOT NULL DEFAULT '[]',
    pinned_cpus TEXT NOT NULL DEFAULT '[]',
    made        TEXT NOT NULL DEFAULT '[]',
    error_code  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX vm_migrations_one_active ON vm_migrations (vm_id)
    WHERE phase IN ('queued', 'preparing', 'transferring', 'committed');
CREATE INDEX vm_migrations_target ON vm_migrations (target)
    WHERE phase IN ('queued', 'preparing', 'transferring');

-- What a long task reports while it runs (a migration: bytes left, the data rate), as JSON.
ALTER TABLE tasks ADD COLUMN progress TEXT;
