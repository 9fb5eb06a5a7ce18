"""Background work: the task runner, its fair queues, the broker executor, step leases and long-poll slots."""
