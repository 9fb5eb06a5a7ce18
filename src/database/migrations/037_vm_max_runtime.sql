-- A VM's time limit (as Slurm's --time): max_runtime_s from each start, after which the
-- platform stops it and gives its GPUs back. runs_until is the current run's end (NULL while
-- it does not run, or has no limit); the queue's estimated_start_at reads it.
ALTER TABLE vm_terms ADD COLUMN max_runtime_s INTEGER CHECK (max_runtime_s > 0);
ALTER TABLE vm_terms ADD COLUMN runs_until TEXT;
CREATE INDEX vm_terms_runs_until ON vm_terms (runs_until) WHERE runs_until IS NOT NULL;
