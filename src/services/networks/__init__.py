"""Networks: the libvirt networks each host offers, and those the platform defines there."""
