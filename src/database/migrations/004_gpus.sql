-- GPU inventory discovered from libvirt node devices, and the ledger that hands each GPU to at
-- most one VM (the primary key makes a double assignment impossible).
CREATE TABLE gpus (
    id                 TEXT PRIMARY KEY,          -- PCI address, 0000:3b:00.0
    vendor_id          TEXT NOT NULL,
    vendor_name        TEXT,
    product_id         TEXT NOT NULL,
    product_name       TEXT,
    iommu_group        INTEGER,
    group_devices      TEXT NOT NULL DEFAULT '[]', -- JSON [{address, class, role}], others only
    functions          TEXT NOT NULL DEFAULT '[]', -- JSON [address]: what passes through with it
    numa_node          INTEGER,
    driver             TEXT,
    unavailable_reason TEXT,
    refreshed_at       TEXT NOT NULL
);
CREATE TABLE gpu_allocations (
    gpu_id       TEXT PRIMARY KEY REFERENCES gpus(id),
    vm_id        TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    allocated_at TEXT NOT NULL
);
CREATE INDEX gpu_allocations_vm ON gpu_allocations(vm_id);
-- A VM holds its vCPUs, RAM and pinned host CPUs until it is deleted or its build fails.
ALTER TABLE vms ADD COLUMN holds_resources INTEGER NOT NULL DEFAULT 1;
ALTER TABLE vms ADD COLUMN numa_node INTEGER;
ALTER TABLE vms ADD COLUMN pinned_cpus TEXT NOT NULL DEFAULT '[]';
