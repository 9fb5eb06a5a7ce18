-- Task latency for /metrics as cumulative histogram buckets, kept by triggers so that tasks
-- ending in any process (the API or a Celery worker) count: 'queued' is accepted to started,
-- 'running' started to finished, by action and executor.
CREATE TABLE latency_buckets (le REAL PRIMARY KEY);
INSERT INTO latency_buckets (le) VALUES (0.05), (0.1), (0.25), (0.5), (1), (2.5), (5), (10),
    (30), (60), (120), (300), (600), (1800), (3600), (9e999);
CREATE TABLE task_latency (
    phase    TEXT NOT NULL,
    action   TEXT NOT NULL,
    executor TEXT NOT NULL,
    le       REAL NOT NULL,
    count    INTEGER NOT NULL,
    sum      REAL NOT NULL,  -- of every observation counted in this bucket
    PRIMARY KEY (phase, action, executor, le)
);
CREATE TRIGGER task_latency_started AFTER UPDATE OF status ON tasks
    WHEN OLD.status = 'queued' AND NEW.status = 'running' BEGIN
    INSERT INTO task_latency (phase, action, executor, le, count, sum)
        SELECT 'queued', NEW.action, NEW.executor, le, 1,
               (julianday(NEW.started_at) - julianday(NEW.created_at)) * 86400
        FROM latency_buckets
        WHERE le >= (julianday(NEW.started_at) - julianday(NEW.created_at)) * 86400
        ON CONFLICT (phase, action, executor, le)
        DO UPDATE SET count = count + 1, sum = sum + excluded.sum;
END;
CREATE TRIGGER task_latency_finished AFTER UPDATE OF status ON tasks
    WHEN OLD.status = 'running' AND NEW.status IN ('succeeded', 'failed') BEGIN
    INSERT INTO task_latency (phase, action, executor, le, count, sum)
        SELECT 'running', NEW.action, NEW.executor, le, 1,
               (julianday(NEW.finished_at) - julianday(NEW.started_at)) * 86400
        FROM latency_buckets
        WHERE le >= (julianday(NEW.finished_at) - julianday(NEW.started_at)) * 86400
        ON CONFLICT (phase, action, executor, le)
        DO UPDATE SET count = count + 1, sum = sum + excluded.sum;
END;
