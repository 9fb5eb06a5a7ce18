-- The networks a waiting VM asks for (issue 23), as a JSON list (empty: its host's network),
-- copied from its create's waiting record when it is queued: a queue pass then reads no
-- waiting task's payload. NULL for a VM queued before this column: the pass reads its task.
ALTER TABLE capacity_waits ADD COLUMN networks TEXT;
