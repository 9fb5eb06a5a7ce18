"""Rules every resource obeys: who may do what, quotas, placement and scheduling, the VM state machine."""
