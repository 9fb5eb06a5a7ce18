"""The capacity queue: VMs that wait for room, placed in fair order as room frees, and the clock
that expires them and looks again every IAAS_RESERVATION_TICK."""
