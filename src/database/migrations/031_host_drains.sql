-- Drains of hosts (issue 24): one row per host last drained. Which migrate tasks it queued and
-- which VMs it could not move (with why); how far it got is read off those tasks.
CREATE TABLE host_drains (
    host        TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    -- [{"task_id", "vm_id", "vm"}]: the moves it queued, one a VM
    moves       TEXT NOT NULL DEFAULT '[]',
    -- [{"vm_id", "vm", "reason"}]: the VMs no host could take when it asked
    unmovable   TEXT NOT NULL DEFAULT '[]'
);
