#!/usr/bin/env bash
# Vagrant provisioner: turn a fresh Ubuntu 22.04 box into this project's dev VM. Safe to run again.
# Runs as root inside the VM (Vagrant does that); it refuses to run anywhere without /vagrant.
set -euo pipefail

REPO=/vagrant
DEV_USER=${DEV_USER:-vagrant}
ENV_FILE=$REPO/configs/iaas.env
IMAGES_DIR=/var/lib/libvirt/images
LIBVIRTD_DROPIN=/etc/systemd/system/libvirtd.service.d/iaas-no-idle-exit.conf

say() { printf 'provision: %s\n' "$*"; }
die() { printf 'provision: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (vagrant provision does)"
[[ -f $REPO/Makefile ]] || die "$REPO/Makefile not found: this script is for the Vagrant dev VM"
id "$DEV_USER" >/dev/null 2>&1 || die "user $DEV_USER does not exist"
DEV_HOME=$(getent passwd "$DEV_USER" | cut -d: -f6)

export DEBIAN_FRONTEND=noninteractive

install_base() {
    say "apt-get update"
    apt-get update -qq
    say "installing make git python3 python3-venv"
    apt-get install -y -qq make git python3 python3-venv >/dev/null
}

libvirt_under_systemd() {
    # scripts/setup.sh starts libvirtd/virtlogd by hand when none is running. On a systemd host
    # libvirtd quits after 120 s idle (--timeout 120) and virtlogd only starts on demand, so a
    # later `make serve` would start unmanaged second copies. Here systemd keeps both running.
    [[ -d /run/systemd/system ]] || return 0
    apt-get install -y -qq libvirt-daemon-system >/dev/null
    local want changed=0
    want=$'# Written by scripts/provision.sh: keep libvirtd running in the dev VM.\n[Service]\nEnvironment=LIBVIRTD_ARGS=\n'
    if [[ ! -f $LIBVIRTD_DROPIN || $(cat "$LIBVIRTD_DROPIN")$'\n' != "$want" ]]; then
        install -d "$(dirname "$LIBVIRTD_DROPIN")"
        printf '%s' "$want" > "$LIBVIRTD_DROPIN"
        changed=1
    fi
    systemctl daemon-reload
    systemctl --quiet add-wants multi-user.target virtlogd.service
    systemctl --quiet enable libvirtd.service
    systemctl start virtlogd.service
    if ((changed)); then
        say "restarting libvirtd without its idle timeout"
        systemctl restart libvirtd.service
    else
        systemctl start libvirtd.service
    fi
}

run_setup() {
    say "make setup"
    (cd "$REPO" && make setup)
    # The venv was made by root; on a copied (rsync) checkout hand it to the user who runs make.
    chown -R "$DEV_USER:" "$REPO/.venv" 2>/dev/null || true
}

default_network() {
    # The dev VM's VMs use libvirt's NAT network `default` (IAAS_NETWORK's default).
    virsh -q -c qemu:///system net-info default >/dev/null 2>&1 || return 0
    virsh -q -c qemu:///system net-autostart default >/dev/null
    if ! virsh -q -c qemu:///system net-info default | grep -Eq '^Active:[[:space:]]+yes'; then
        say "starting libvirt network default"
        virsh -q -c qemu:///system net-start default >/dev/null
    fi
}

user_access() {
    local group
    for group in libvirt kvm; do
        if ! id -nG "$DEV_USER" | tr ' ' '\n' | grep -qx "$group"; then
            say "adding $DEV_USER to group $group"
            usermod -aG "$group" "$DEV_USER"
        fi
    done
    # The server runs as $DEV_USER and writes base images and instance folders here.
    chgrp libvirt "$IMAGES_DIR"
    chmod 2771 "$IMAGES_DIR"
    # Plain `virsh` talks to the same libvirtd as the server.
    printf 'export LIBVIRT_DEFAULT_URI=qemu:///system\n' > /etc/profile.d/iaas-libvirt.sh
}

write_env_file() {
    if [[ -e $ENV_FILE ]]; then
        say "$ENV_FILE exists, left as it is"
        return
    fi
    say "writing $ENV_FILE"
    {
        echo "# Written once by scripts/provision.sh for the Vagrant dev VM; edit freely."
        echo "# Listen on every address so the host reaches the API at 192.168.56.10:8000."
        echo "IAAS_HOST=0.0.0.0"
        echo "# SQLite locking is unreliable on shared folders: keep the database on the VM's disk."
        echo "IAAS_DB_PATH=$DEV_HOME/iaas_metadata.db"
        if [[ ! -e /dev/kvm ]]; then
            echo "# No /dev/kvm in this VM (nested virtualization is off): emulate with TCG."
            echo "IAAS_DOMAIN_TYPE=qemu"
        fi
    } > "$ENV_FILE"
}

check_tiny_image_kernel() {
    # scripts/build_tiny_image.sh takes its kernel from Debian's linux-image-cloud-amd64.
    [[ -f $REPO/images/tiny-linux.qcow2 ]] && return 0
    apt-cache show "${TINY_KERNEL_META:-linux-image-cloud-amd64}" >/dev/null 2>&1 && return 0
    say "WARNING: ${TINY_KERNEL_META:-linux-image-cloud-amd64} is not in this VM's apt sources,"
    say "  so make serve cannot build images/tiny-linux.qcow2 here; copy one built on a Debian"
    say "  host into images/ first."
}

install_base
libvirt_under_systemd
run_setup
default_network
user_access
write_env_file
check_tiny_image_kernel

cat <<EOF

provision: done. Next (log in afresh so the libvirt and kvm groups apply):
  vagrant ssh
  cd /vagrant && make serve
  # from the host:
  curl http://192.168.56.10:8000/healthz
EOF
