-- Security groups (issue 24): a project's named sets of ingress rules, and the VMs each is
-- attached to. Enforcement is one libvirt nwfilter per VM, rendered from these rows.
CREATE TABLE security_groups (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (project, name)
);
-- A rule allows inbound traffic from a CIDR or from the members of a group of the same project
-- (exactly one of the two). protocol 'all' is every IP protocol (ports then do not apply).
CREATE TABLE security_group_rules (
    id              TEXT PRIMARY KEY,
    group_id        TEXT NOT NULL REFERENCES security_groups (id) ON DELETE CASCADE,
    direction       TEXT NOT NULL DEFAULT 'ingress' CHECK (direction = 'ingress'),
    protocol        TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp', 'icmp', 'all')),
    port_min        INTEGER CHECK (port_min BETWEEN 1 AND 65535),
    port_max        INTEGER CHECK (port_max BETWEEN 1 AND 65535),
    cidr            TEXT,
    remote_group_id TEXT REFERENCES security_groups (id),
    created_at      TEXT NOT NULL,
    CHECK ((cidr IS NULL) <> (remote_group_id IS NULL)),
    CHECK (port_min IS NULL OR port_max IS NULL OR port_min <= port_max)
);
CREATE INDEX security_group_rules_group ON security_group_rules (group_id);
CREATE INDEX security_group_rules_remote ON security_group_rules (remote_group_id)
    WHERE remote_group_id IS NOT NULL;
CREATE TABLE vm_security_groups (
    vm_id    TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES security_groups (id),
    PRIMARY KEY (vm_id, group_id)
);
CREATE INDEX vm_security_groups_group ON vm_security_groups (group_id);
-- VMs whose filter must be refreshed once the task they are busy with ends.
CREATE TABLE firewall_pending (
    vm_id TEXT PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE
);
-- Projects made before security groups have no limit on them until an admin sets one.
ALTER TABLE projects ADD COLUMN quota_security_groups INTEGER;
