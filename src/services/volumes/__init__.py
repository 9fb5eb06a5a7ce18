"""Volumes: block devices that outlive VMs, their attachments, snapshots and layers."""
