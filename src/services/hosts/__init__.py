"""Hosts: their records and connections, what each has free, their GPUs, and how admins manage them."""
