"""Small helpers: time, qemu-img, domain XML rendering and the one libvirt module."""
