-- Disk quotas, indexes for every hot query, and task counts kept current by triggers (so
-- /metrics never counts a table that only grows).
ALTER TABLE projects ADD COLUMN quota_disk_gb INTEGER;
-- Overdue tasks: the reconciler asks every sweep.
CREATE INDEX tasks_running_deadline ON tasks (deadline) WHERE status = 'running';
-- Retention: finished tasks by age.
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('succeeded', 'failed');
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX vms_status ON vms (status);
CREATE TABLE task_counts (
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (action, status)
);
INSERT INTO task_counts (action, status, count)
    SELECT action, status, count(*) FROM tasks GROUP BY action, status;
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_counts (action, status, count) VALUES (NEW.action, NEW.status, 1)
        ON CONFLICT (action, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER task_counts_update AFTER UPDATE OF status ON tasks
    WHEN OLD.status != NEW.status BEGIN
    UPDATE task_counts SET count = count - 1 WHERE action = OLD.action AND status = OLD.status;
    INSERT INTO task_counts (action, status, count) VALUES (NEW.action, NEW.status, 1)
        ON CONFLICT (action, status) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET count = count - 1 WHERE action = OLD.action AND status = OLD.status;
END;
