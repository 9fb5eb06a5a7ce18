"""Security groups: a project's ingress rules, the VMs they are attached to, and the libvirt
nwfilter each VM's NICs carry."""
