-- GPU partitions (issue 23): the mediated device types each GPU offers (libvirt's mdev_types
-- capability of its node device), and the ledger of the mdevs made for VMs, exclusive per mdev
-- UUID. `total` is what the GPU can hold of the type: what libvirt reported as still available
-- at the last refresh plus what our own VMs held of it then.
CREATE TABLE gpu_partitions (
    host         TEXT NOT NULL,
    parent       TEXT NOT NULL,   -- the GPU's PCI address
    type_id      TEXT NOT NULL,   -- e.g. nvidia-700
    name         TEXT,            -- e.g. NVIDIA H100-1-10C
    total        INTEGER NOT NULL CHECK (total >= 0),
    refreshed_at TEXT NOT NULL,
    PRIMARY KEY (host, parent, type_id)
);
CREATE TABLE partition_allocations (
    mdev_uuid    TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    parent       TEXT NOT NULL,
    type_id      TEXT NOT NULL,
    vm_id        TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    allocated_at TEXT NOT NULL
);
CREATE INDEX partition_allocations_parent ON partition_allocations (host, parent);
CREATE INDEX partition_allocations_vm ON partition_allocations (vm_id);
-- A flavor may ask for one partition of a type (its name or id) instead of whole GPUs.
ALTER TABLE flavors ADD COLUMN gpu_profile TEXT;
