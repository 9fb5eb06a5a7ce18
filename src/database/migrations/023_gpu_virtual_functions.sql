-- SR-IOV virtual functions as GPU partitions (issue 23): newer NVIDIA vGPU hosts split a GPU
-- into PCI virtual functions (the virt_functions capability of its node device) rather than
-- mdevs. Both kinds share gpu_partitions: for a VF offer, type_id is 'sriov_vf' and total the
-- number of VFs the physical function has enabled.
ALTER TABLE gpu_partitions ADD COLUMN kind TEXT NOT NULL DEFAULT 'mdev'
    CHECK (kind IN ('mdev', 'vf'));
