"""Hosts in motion: VMs migrated between hosts, hosts drained, and dead hosts evacuated."""
