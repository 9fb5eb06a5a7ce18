-- Flavors: named VM sizes, GPU requests and placement wishes.
CREATE TABLE flavors (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    cpu          INTEGER NOT NULL,
    ram          INTEGER NOT NULL,
    disk_gb      INTEGER NOT NULL,
    gpu_count    INTEGER NOT NULL DEFAULT 0,
    gpu_model    TEXT,
    hugepages    INTEGER NOT NULL DEFAULT 0,
    cpu_pinning  INTEGER NOT NULL DEFAULT 0,
    numa_aligned INTEGER NOT NULL DEFAULT 0,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL
);
ALTER TABLE vms ADD COLUMN flavor_name TEXT;
