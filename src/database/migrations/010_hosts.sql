-- Many hosts: each VM and GPU belongs to one. Existing VMs, GPUs and reservations move to the
-- host `local`, which db-init and the server's start register from IAAS_LIBVIRT_URI.
CREATE TABLE hosts (
    name                 TEXT PRIMARY KEY,
    uri                  TEXT NOT NULL,
    storage              TEXT NOT NULL DEFAULT 'shared' CHECK (storage IN ('shared', 'pool')),
    storage_pool         TEXT NOT NULL DEFAULT 'iaas',
    network              TEXT NOT NULL,
    domain_type          TEXT NOT NULL,
    cpu_allocation_ratio REAL NOT NULL,
    ram_allocation_ratio REAL NOT NULL,
    enabled              INTEGER NOT NULL DEFAULT 1,
    created_at           TEXT NOT NULL
);
ALTER TABLE vms ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
CREATE INDEX vms_host ON vms (host, created_at);
ALTER TABLE tasks ADD COLUMN host TEXT;
ALTER TABLE images ADD COLUMN sha256 TEXT;
-- A PCI address names a GPU only on its own host.
CREATE TABLE gpus_new (
    host               TEXT NOT NULL DEFAULT 'local',
    id                 TEXT NOT NULL,
    vendor_id          TEXT NOT NULL,
    vendor_name        TEXT,
    product_id         TEXT NOT NULL,
    product_name       TEXT,
    iommu_group        INTEGER,
    group_devices      TEXT NOT NULL DEFAULT '[]',
    functions          TEXT NOT NULL DEFAULT '[]',
    numa_node          INTEGER,
    driver             TEXT,
    unavailable_reason TEXT,
    refreshed_at       TEXT NOT NULL,
    PRIMARY KEY (host, id)
);
INSERT INTO gpus_new (host, id, vendor_id, vendor_name, product_id, product_name, iommu_group,
                      group_devices, functions, numa_node, driver, unavailable_reason,
                      refreshed_at)
SELECT 'local', id, vendor_id, vendor_name, product_id, product_name, iommu_group, group_devices,
       functions, numa_node, driver, unavailable_reason, refreshed_at FROM gpus;
CREATE TABLE gpu_allocations_new (
    host         TEXT NOT NULL DEFAULT 'local',
    gpu_id       TEXT NOT NULL,
    vm_id        TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    allocated_at TEXT NOT NULL,
    PRIMARY KEY (host, gpu_id),
    FOREIGN KEY (host, gpu_id) REFERENCES gpus(host, id)
);
INSERT INTO gpu_allocations_new (host, gpu_id, vm_id, allocated_at)
SELECT 'local', gpu_id, vm_id, allocated_at FROM gpu_allocations;
DROP TABLE gpu_allocations;
DROP TABLE gpus;
ALTER TABLE gpus_new RENAME TO gpus;
ALTER TABLE gpu_allocations_new RENAME TO gpu_allocations;
CREATE INDEX gpu_allocations_vm ON gpu_allocations (vm_id);
-- Base images copied into hosts' storage pools, each checked against the image's SHA-256.
CREATE TABLE image_copies (
    image_id  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    host      TEXT NOT NULL,
    volume    TEXT NOT NULL,
    copied_at TEXT NOT NULL,
    PRIMARY KEY (image_id, host)
);
