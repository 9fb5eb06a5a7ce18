-- What each host holds, kept as counters in the transaction of every change to a VM row (a
-- create's claim, a failed build's release, a delete), so a create reads one row per host
-- instead of summing every VM. Volumes' GiB (volumes_gb) are kept by the volumes DAO: this
-- migration may run before 019 made their table, and src/database/hosts.py `repair_usage`
-- recounts everything at start-up.
CREATE TABLE host_usage (
    host       TEXT PRIMARY KEY,
    vcpus      INTEGER NOT NULL DEFAULT 0,
    ram_mib    INTEGER NOT NULL DEFAULT 0,
    disk_gb    INTEGER NOT NULL DEFAULT 0,  -- VM disks
    volumes_gb INTEGER NOT NULL DEFAULT 0
);
-- The host CPUs pinned VMs hold (one row per CPU and VM).
CREATE TABLE host_pinned_cpus (
    host  TEXT NOT NULL,
    cpu   INTEGER NOT NULL,
    vm_id TEXT NOT NULL,
    PRIMARY KEY (host, cpu, vm_id)
);
CREATE INDEX host_pinned_cpus_vm ON host_pinned_cpus (vm_id);
INSERT INTO host_usage (host, vcpus, ram_mib, disk_gb)
    SELECT host, sum(cpu), sum(ram), sum(disk_gb) FROM vms WHERE holds_resources = 1
    GROUP BY host;
INSERT INTO host_pinned_cpus (host, cpu, vm_id)
    SELECT v.host, p.value, v.id FROM vms v, json_each(v.pinned_cpus) p
    WHERE v.holds_resources = 1;
CREATE TRIGGER host_usage_vm_insert AFTER INSERT ON vms WHEN NEW.holds_resources = 1 BEGIN
    INSERT INTO host_usage (host, vcpus, ram_mib, disk_gb)
        VALUES (NEW.host, NEW.cpu, NEW.ram, NEW.disk_gb)
        ON CONFLICT (host) DO UPDATE SET vcpus = vcpus + excluded.vcpus,
            ram_mib = ram_mib + excluded.ram_mib, disk_gb = disk_gb + excluded.disk_gb;
    INSERT INTO host_pinned_cpus (host, cpu, vm_id)
        SELECT NEW.host, value, NEW.id FROM json_each(NEW.pinned_cpus);
END;
CREATE TRIGGER host_usage_vm_delete AFTER DELETE ON vms WHEN OLD.holds_resources = 1 BEGIN
    UPDATE host_usage SET vcpus = vcpus - OLD.cpu, ram_mib = ram_mib - OLD.ram,
        disk_gb = disk_gb - OLD.disk_gb WHERE host = OLD.host;
    DELETE FROM host_pinned_cpus WHERE vm_id = OLD.id;
END;
CREATE TRIGGER host_usage_vm_update
    AFTER UPDATE OF holds_resources, host, cpu, ram, disk_gb, pinned_cpus ON vms BEGIN
    UPDATE host_usage SET vcpus = vcpus - OLD.cpu, ram_mib = ram_mib - OLD.ram,
        disk_gb = disk_gb - OLD.disk_gb WHERE host = OLD.host AND OLD.holds_resources = 1;
    DELETE FROM host_pinned_cpus WHERE vm_id = OLD.id;
    INSERT INTO host_usage (host, vcpus, ram_mib, disk_gb)
        SELECT NEW.host, NEW.cpu, NEW.ram, NEW.disk_gb WHERE NEW.holds_resources = 1
        ON CONFLICT (host) DO UPDATE SET vcpus = vcpus + excluded.vcpus,
            ram_mib = ram_mib + excluded.ram_mib, disk_gb = disk_gb + excluded.disk_gb;
    INSERT INTO host_pinned_cpus (host, cpu, vm_id)
        SELECT NEW.host, value, NEW.id FROM json_each(NEW.pinned_cpus)
        WHERE NEW.holds_resources = 1;
END;
