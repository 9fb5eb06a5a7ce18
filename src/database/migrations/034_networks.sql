-- Networks (issue 24): the libvirt networks the platform defined on its hosts (a host's other
-- networks are listed live from libvirt, never stored), and each VM's NICs in order.
CREATE TABLE networks (
    host        TEXT NOT NULL,
    name        TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('isolated', 'nat', 'bridge')),
    subnet      TEXT,  -- IPv4 CIDR of isolated and nat networks; NULL for bridge
    bridge      TEXT,  -- the host bridge a bridge network attaches to
    created_at  TEXT NOT NULL,
    PRIMARY KEY (host, name)
);

-- One row per NIC: position 0 is the VM's first NIC (the guest's eth0, the MAC in vms.mac).
CREATE TABLE vm_nics (
    vm_id     TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL CHECK (position >= 0),
    network   TEXT NOT NULL,
    mac       TEXT NOT NULL,
    -- [{"address", "family", "source"}], learned like vms.ip_addresses (their union)
    addresses TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (vm_id, position)
);
CREATE INDEX vm_nics_network ON vm_nics (network);

-- Every VM placed before: one NIC on its host's network, with its MAC and addresses.
INSERT INTO vm_nics (vm_id, position, network, mac, addresses)
    SELECT v.id, 0, h.network, v.mac, v.ip_addresses
    FROM vms v JOIN hosts h ON h.name = v.host WHERE v.mac IS NOT NULL;
