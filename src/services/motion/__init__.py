"""Hosts in motion: VMs migrated between hosts, hosts drained and evacuated."""
