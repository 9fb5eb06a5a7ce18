-- The capacity queue (issue 23): VMs created with wait_for_capacity that fit nowhere yet. It
-- lives here, so it outlives an API restart and a worker loss. A waiting VM's row is `queued`
-- and holds nothing (holds_resources 0, host ''); its create task is `queued` with executor
-- 'queue' (no executor has it) until a placement claims capacity for it and hands it on.
CREATE TABLE capacity_waits (
    vm_id       TEXT PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    task_id     TEXT NOT NULL,
    project     TEXT NOT NULL,
    since       TEXT NOT NULL,            -- when it was asked for: the oldest goes first
    expires_at  TEXT NOT NULL,            -- since + max_wait_s: then capacity_wait_expired
    reason      TEXT NOT NULL,            -- what it waits for: gpu, pcpu, vcpu, ram, disk, host
    demand      TEXT NOT NULL,            -- JSON: the placement Demand
    pinned_host TEXT,                     -- an admin's host, or the host of its volumes
    position    INTEGER,                  -- in the fair order, as the last pass found it
    estimated_start_at TEXT               -- when known (a reservation's end frees what it needs)
);
CREATE INDEX capacity_waits_since ON capacity_waits (since);
