"""VMs: accepting creates and actions, reading them, and the host-side work of their tasks."""
