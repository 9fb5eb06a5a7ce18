"""Hosts in motion: VMs migrated between hosts, and hosts drained."""
