-- VM names are unique per project, not across projects. The libvirt domain's name is recorded
-- per VM: iaas-<id> for VMs created from now on, the VM's own name for those created before
-- (their domains keep the name they were defined with).
-- SQLite cannot drop a column's UNIQUE constraint, so vms is rebuilt (the documented
-- create-copy-drop-rename procedure: Database.migrate runs it with foreign keys off and checks
-- them before it commits, so gpu_allocations keeps its rows and its reference to vms).
CREATE TABLE vms_new (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    cpu             INTEGER NOT NULL,
    ram             INTEGER NOT NULL,
    disk_gb         INTEGER NOT NULL,
    image_id        TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    status          TEXT NOT NULL,
    vnc_port        INTEGER,
    ip_addresses    TEXT NOT NULL DEFAULT '[]',
    error_code      TEXT,
    error_message   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    mac             TEXT,
    flavor_name     TEXT,
    holds_resources INTEGER NOT NULL DEFAULT 1,
    numa_node       INTEGER,
    pinned_cpus     TEXT NOT NULL DEFAULT '[]',
    project         TEXT NOT NULL DEFAULT 'default',
    domain_name     TEXT NOT NULL,
    UNIQUE (project, name)
);
INSERT INTO vms_new (id, name, cpu, ram, disk_gb, image_id, status, vnc_port, ip_addresses,
                     error_code, error_message, created_at, updated_at, mac, flavor_name,
                     holds_resources, numa_node, pinned_cpus, project, domain_name)
SELECT id, name, cpu, ram, disk_gb, image_id, status, vnc_port, ip_addresses,
       error_code, error_message, created_at, updated_at, mac, flavor_name,
       holds_resources, numa_node, pinned_cpus, project, name
FROM vms;
DROP TABLE vms;
ALTER TABLE vms_new RENAME TO vms;
CREATE INDEX vms_created ON vms (created_at, id);
CREATE INDEX vms_image ON vms (image_id);
CREATE INDEX vms_project ON vms (project);
-- libvirt domain names are unique on a host, and so here.
CREATE UNIQUE INDEX vms_domain_name ON vms (domain_name);
-- Migration 008's index on vms, which the rebuild dropped with the old table.
CREATE INDEX vms_status ON vms (status);
