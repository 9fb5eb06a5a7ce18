"""AI-focused IaaS control plane: a pure-WSGI REST API over libvirt/QEMU."""
