-- SR-IOV virtual functions given to VMs (issue 23): a VF offer keeps the PCI addresses of its
-- VFs, and the one partition ledger holds a VF by its own address, exclusive per host. An
-- mdev's row leaves address NULL (NULLs never collide in a unique index); a VF's row keys
-- mdev_uuid with a UUID of its own, so the ledger keeps one primary key for both kinds.
ALTER TABLE gpu_partitions ADD COLUMN functions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE partition_allocations ADD COLUMN address TEXT;
CREATE UNIQUE INDEX partition_allocations_address ON partition_allocations (host, address);
