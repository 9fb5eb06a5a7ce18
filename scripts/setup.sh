#!/usr/bin/env bash
# Install what is missing and start what is not running: Debian packages, the venv,
# /dev/kvm permissions, virtlogd and libvirtd. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
          dnsmasq-base python3-venv python3-dev gcc syslinux syslinux-common mtools dosfstools cpio
          libxml2-utils)
# Only the tests need these: cloud-init checks the NoCloud seed's schema, ssh-keygen makes real keys;
# the second libvirt host of the multi-host tests needs ip (netns, veth) and openssl (its TLS PKI);
# the dashboard's browser tests drive Debian's chromium through Playwright (which never downloads
# a browser of its own here).
DEV_PACKAGES=(cloud-init openssh-client iproute2 openssl chromium)
VENV=${VENV:-.venv}
REQUIREMENTS=${REQUIREMENTS:-requirements-dev.txt}
PYTHON=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# cloud-init installed as a test tool must never configure this host: its documented off switch
# goes in first. A cloud-init that was already here is the host's own and is left alone.
install_dev_packages() {
    [[ $(basename "$REQUIREMENTS") == requirements-dev.txt ]] || return 0
    if ! installed cloud-init && [[ ! -e /etc/cloud/cloud-init.disabled ]]; then
        say "disabling cloud-init on this host (/etc/cloud/cloud-init.disabled) before installing it"
        as_root mkdir -p /etc/cloud
        as_root touch /etc/cloud/cloud-init.disabled
    fi
    install_packages "${DEV_PACKAGES[@]}"
}

fix_kvm_permissions() {
    # Without udev /dev/kvm stays root:root 0600; libvirtd then re-probes QEMU on every call
    # (~44 s per define instead of ~2 ms).
    [[ -e /dev/kvm ]] || { say "no /dev/kvm: use IAAS_DOMAIN_TYPE=qemu (TCG)"; return; }
    if [[ $(stat -c '%G %a' /dev/kvm) != "kvm 660" ]]; then
        say "fixing /dev/kvm to root:kvm 0660"
        as_root chown root:kvm /dev/kvm
        as_root chmod 660 /dev/kvm
    fi
}

libvirt_answers() { as_root virsh -c qemu:///system version >/dev/null 2>&1; }

start_daemons() {
    libvirt_answers && return
    if [[ -d /run/systemd/system ]]; then
        # A systemd host: let its units (and socket activation) own the daemons.
        say "starting virtlogd and libvirtd with systemd"
        as_root systemctl start virtlogd.socket libvirtd.socket libvirtd.service
    else
        # No init system here (containers, CI sandboxes): run them as daemons ourselves.
        pgrep -x virtlogd >/dev/null || { say "starting virtlogd"; as_root virtlogd -d; }
        if ! pgrep -x libvirtd >/dev/null; then
            say "starting libvirtd"
            as_root libvirtd -d
        fi
    fi
    local deadline=$((SECONDS + 60))
    until libvirt_answers; do
        ((SECONDS < deadline)) || { say "libvirtd does not answer on qemu:///system"; exit 1; }
        sleep 0.5
    done
}

# The stamp covers the requirements, pyproject.toml and the path of the checkout the venv lives
# in: `iaas` is installed editable, pointing at that checkout. A checkout whose .venv is a link
# to another's (a worktree, a CI clone) leaves it pointing there: re-pointing a shared venv at
# itself would reinstall it under every other run using it (and break it once that clone is
# deleted), while tests and `python -m` run each checkout's own code from its own directory.
make_venv() {
    local stamp="$VENV/.stamp-$(basename "$REQUIREMENTS")" want home
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    home=$(cd -P "$VENV/.." && pwd -P)
    want=$( (cat requirements.txt "$REQUIREMENTS" pyproject.toml; echo "$home") | sha256sum | cut -d' ' -f1)
    if [[ -f "$stamp" && $(cat "$stamp") == "$want" ]]; then return; fi
    say "building $VENV from $REQUIREMENTS"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
    # The `iaas` command (.venv/bin/iaas); its dependencies came with the requirements.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e "$home"
    echo "$want" > "$stamp"
}

install_packages "${PACKAGES[@]}"
install_dev_packages
fix_kvm_permissions
start_daemons
make_venv
# The broker tier of the tests needs RabbitMQ running (its own vhost and user come per test).
if [[ $(basename "$REQUIREMENTS") == requirements-dev.txt ]]; then
    scripts/broker.sh start
fi
say "ready"
