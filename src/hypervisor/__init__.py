"""The hypervisor layer: the only code that imports libvirt or runs qemu-img."""
