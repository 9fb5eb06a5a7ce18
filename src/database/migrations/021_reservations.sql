-- Reservations (issue 23): a project books `count` VMs of a GPU flavor for [start_at, end_at).
-- The booking claims GPUs (host and PCI address) in gpu_claims, a ledger of time windows: a
-- trigger refuses a claim that overlaps another claim of the same GPU, beside the booking's own
-- check in its BEGIN IMMEDIATE transaction, so two bookings never hold one GPU at one moment.
CREATE TABLE reservations (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    flavor_id   TEXT NOT NULL,
    flavor_name TEXT NOT NULL,
    count       INTEGER NOT NULL CHECK (count > 0),
    gpus_per_vm INTEGER NOT NULL CHECK (gpus_per_vm > 0),
    start_at    TEXT NOT NULL,
    end_at      TEXT NOT NULL,
    -- The clock's progress: pending (before start), active (its start was enforced), ended
    -- (its end was), or cancelled.
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'active', 'ended', 'cancelled')),
    created_at  TEXT NOT NULL,
    CHECK (start_at < end_at)
);
CREATE INDEX reservations_project ON reservations (project, start_at);
CREATE INDEX reservations_open ON reservations (start_at) WHERE status IN ('pending', 'active');
CREATE TABLE gpu_claims (
    reservation_id TEXT NOT NULL REFERENCES reservations (id) ON DELETE CASCADE,
    host           TEXT NOT NULL,
    gpu_id         TEXT NOT NULL,
    slot           INTEGER NOT NULL,  -- which of the reservation's VMs the GPU is for
    start_at       TEXT NOT NULL,
    end_at         TEXT NOT NULL,     -- the window's end, or when it was cancelled
    PRIMARY KEY (reservation_id, host, gpu_id)
);
CREATE INDEX gpu_claims_gpu ON gpu_claims (host, gpu_id, start_at);
CREATE INDEX gpu_claims_end ON gpu_claims (end_at);
CREATE TRIGGER gpu_claims_exclusive BEFORE INSERT ON gpu_claims
WHEN EXISTS (SELECT 1 FROM gpu_claims c WHERE c.host = NEW.host AND c.gpu_id = NEW.gpu_id
             AND c.start_at < NEW.end_at AND NEW.start_at < c.end_at)
BEGIN
    SELECT RAISE(ABORT, 'gpu_claims: the GPU is claimed for an overlapping window');
END;
-- What a VM agreed to beyond its size: the reservation it runs in, whether it may be
-- preempted, and the GPUs a stop for a reservation gave back (its next start takes them again).
CREATE TABLE vm_terms (
    vm_id          TEXT PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    reservation_id TEXT,
    preemptible    INTEGER NOT NULL DEFAULT 0,
    released_gpus  TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX vm_terms_reservation ON vm_terms (reservation_id) WHERE reservation_id IS NOT NULL;
-- Why the platform itself asked for a task (a stop for a reservation), shown in its history.
ALTER TABLE tasks ADD COLUMN reason TEXT;
