-- Lifecycle: one active task per VM (the hold), task deadlines and request ids, the VM's MAC.
ALTER TABLE tasks ADD COLUMN request_id TEXT;
ALTER TABLE tasks ADD COLUMN deadline TEXT;
-- The hold: a second queued/running task for the same VM violates this index (vm_busy).
CREATE UNIQUE INDEX tasks_one_active_per_vm ON tasks (vm_id) WHERE status IN ('queued', 'running');
CREATE INDEX tasks_vm_created ON tasks (vm_id, created_at);
ALTER TABLE vms ADD COLUMN mac TEXT;
