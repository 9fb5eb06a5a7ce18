#!/usr/bin/env bash
# Build a tiny bootable Linux guest image (qcow2) from Debian packages only.
#
# Usage: scripts/build_tiny_image.sh OUTPUT.qcow2
#
# If OUTPUT already exists it is reused (cache) and the script exits 0.
# Otherwise the image is built in a temporary directory and moved into place
# atomically (OUTPUT.tmp -> OUTPUT).
#
# Ingredients (fetched with `apt-get download`, unpacked with `dpkg-deb -x`,
# nothing is installed on the host; no mount, no loop devices):
#   * the kernel behind the linux-image-cloud-amd64 metapackage
#     (virtio + iso9660 drivers are loaded from its modules),
#   * busybox-static as the whole userland of a gzip'd newc initramfs,
#   * syslinux (host tool) installed onto a raw FAT image (mtools only),
#     converted to qcow2 with qemu-img.
#
# Guest behaviour (/init):
#   mount proc/sys/devtmpfs, insmod virtio/net/blk/cdrom/isofs modules, print
#   `IAAS-TINY-BOOT-OK`, set the default hostname, read the NoCloud seed (below),
#   DHCP on eth0 via udhcpc (prints `IAAS-DHCP-LEASE <ip>` or `IAAS-DHCP-FAILED`),
#   print `IAAS-TINY-READY`, then respawn a shell on the serial console forever.
#
#   The NoCloud seed is found the way cloud-init finds it: the block device holding
#   an ISO 9660 filesystem labelled `cidata` (the platform attaches it as a read-only
#   virtio disk, usually /dev/vdb). It is mounted read-only; `local-hostname` from
#   meta-data becomes the hostname (`IAAS-SEED-HOSTNAME <name>`), and each entry of
#   `ssh_authorized_keys` in user-data (plain #cloud-config, or the 7bit platform part
#   of a MIME archive) is printed as `IAAS-SEED-SSH-KEY <key line>`. Without a seed
#   the boot prints `IAAS-SEED-NONE`.
#   Extra disks (volumes): a loop started in the background before `IAAS-TINY-READY`
#   looks at /sys/block/vd* every 0.5 s (no udev; devtmpfs makes the nodes). Every disk but
#   the root (the first virtio disk at boot, which the guest booted from) and the NoCloud
#   seed is reported, when it appears (at boot too) and when it goes:
#     IAAS-DISK-SEEN <dev> serial=<serial or -> ro=<0|1> data=<line or ->
#       data: the first line of the disk's sector 0 when it starts with IAAS-DATA, else -;
#     then it writes the stamp `IAAS-DATA <hostname> <8 random hex digits>` into sector 0
#     (padded with zeros, conv=fsync, then sync) and prints one of
#     IAAS-DISK-WROTE <dev> <stamp>
#     IAAS-DISK-WRITE-FAILED <dev>          (a read-only disk)
#     IAAS-DISK-GONE <dev>                  (when it was unplugged)
#   So a test sees what the last guest wrote to a volume, and that this one could write.
#
#   Network services (for security-group tests): after DHCP, busybox `httpd` serves
#   /www/index.html (one line: `IAAS-HTTP <hostname>`) on port 80 and the boot prints
#   `IAAS-HTTPD-UP`. When user-data (plain, or the user's base64 part of the platform's
#   MIME archive) has a top-level key `iaas_probe_url: <url>`, a loop
#   fetches that URL with wget every second (3 s timeout each) and prints only when the
#   result changes (the first result too):
#     IAAS-PROBE-OK <url>        the fetch answered
#     IAAS-PROBE-FAIL <url>      it did not (refused, dropped, timed out)
#   So a test sees guest-to-guest reachability change when a filter changes.
#
#   With TINY_ACPI=poweroff (default) busybox acpid powers the guest off when the
#   ACPI power button is pressed (`virsh shutdown`, and libvirt's ACPI reboot), and
#   the boot prints `IAAS-ACPI-POWEROFF`; with TINY_ACPI=ignore nothing listens,
#   the boot prints `IAAS-ACPI-IGNORED`: a guest that ignores graceful shutdown.
#
# The guest needs ACPI in the domain XML; it boots under TCG (type='qemu').
#
# Environment overrides:
#   TINY_KERNEL_META  kernel metapackage (default linux-image-cloud-amd64)
#   TINY_HOSTNAME     guest hostname (default iaas-tiny)
#   TINY_APPEND_EXTRA extra kernel command line (default "quiet")
#   TINY_ACPI         poweroff (default) or ignore: what the ACPI power button does
set -euo pipefail

log() { printf 'build_tiny_image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ $# -ne 1 || -z "${1:-}" ]]; then
    echo "usage: $0 OUTPUT.qcow2" >&2
    exit 2
fi

OUTPUT=$1
KERNEL_META=${TINY_KERNEL_META:-linux-image-cloud-amd64}
GUEST_HOSTNAME=${TINY_HOSTNAME:-iaas-tiny}
APPEND_EXTRA=${TINY_APPEND_EXTRA:-quiet}
ACPI_MODE=${TINY_ACPI:-poweroff}
[[ "$ACPI_MODE" == poweroff || "$ACPI_MODE" == ignore ]] || { echo "TINY_ACPI must be poweroff or ignore" >&2; exit 2; }

# Modules to load, in dependency order. Missing ones (built in) are skipped.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
         virtio_pci virtio_blk failover net_failover virtio_net cdrom isofs
         evdev button)

if [[ -e "$OUTPUT" ]]; then
    echo "tiny image already present (cached): $OUTPUT"
    exit 0
fi

for tool in apt-get apt-cache dpkg-deb cpio gzip mkfs.vfat syslinux mcopy qemu-img find; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done

OUT_DIR=$(dirname -- "$OUTPUT")
mkdir -p -- "$OUT_DIR"
TMP_OUT="${OUTPUT}.tmp"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tiny-image.XXXXXX")
cleanup() {
    rm -rf -- "$WORK"
    rm -f -- "$TMP_OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

START=$SECONDS

# --- fetch packages ---------------------------------------------------------
DEBS="$WORK/debs"
mkdir -p -- "$DEBS"
# Let apt's unprivileged _apt user write here (avoids the "unsandboxed" warning).
chmod 0755 -- "$WORK"
if id _apt >/dev/null 2>&1; then
    chown _apt -- "$DEBS" 2>/dev/null || true
fi

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "running apt-get update"
        apt-get update -qq >&2 || log "apt-get update failed (continuing)"
        APT_UPDATED=1
    fi
}

resolve_kernel_pkg() {
    # The metapackage depends on the real, versioned image package.
    apt-cache depends "$KERNEL_META" 2>/dev/null \
        | awk '$1 ~ /^\|?Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

apt_download() {
    # apt_download PKG... ; downloads into $DEBS, updating lists once on failure.
    if ! (cd -- "$DEBS" && apt-get download -qq "$@" >&2); then
        apt_update_once
        (cd -- "$DEBS" && apt-get download -qq "$@" >&2) \
            || die "apt-get download failed for: $*"
    fi
}

KERNEL_PKG=$(resolve_kernel_pkg || true)
if [[ -z "$KERNEL_PKG" ]]; then
    apt_update_once
    KERNEL_PKG=$(resolve_kernel_pkg || true)
fi
[[ -n "$KERNEL_PKG" ]] || die "cannot resolve the kernel package behind $KERNEL_META"
log "kernel package: $KERNEL_PKG"

apt_download "$KERNEL_PKG" busybox-static

shopt -s nullglob
kdebs=("$DEBS"/"${KERNEL_PKG}"_*.deb)
bdebs=("$DEBS"/busybox-static_*.deb)
shopt -u nullglob
[[ ${#kdebs[@]} -ge 1 ]] || die "kernel .deb not found after download"
[[ ${#bdebs[@]} -ge 1 ]] || die "busybox-static .deb not found after download"

KROOT="$WORK/kernel"
BBROOT="$WORK/busybox"
dpkg-deb -x "${kdebs[0]}" "$KROOT"
dpkg-deb -x "${bdebs[0]}" "$BBROOT"

shopt -s nullglob
vmlinuz=("$KROOT"/boot/vmlinuz-*)
moddirs=("$KROOT"/lib/modules/* "$KROOT"/usr/lib/modules/*)
shopt -u nullglob
[[ ${#vmlinuz[@]} -ge 1 ]] || die "no vmlinuz in $KERNEL_PKG"
[[ ${#moddirs[@]} -ge 1 ]] || die "no module directory in $KERNEL_PKG"
KVER=$(basename -- "${moddirs[0]}")
MODDIR=${moddirs[0]}
BUSYBOX="$BBROOT/bin/busybox"
[[ -x "$BUSYBOX" ]] || die "busybox binary not found in busybox-static"

# --- initramfs --------------------------------------------------------------
ROOT="$WORK/initramfs"
mkdir -p -- "$ROOT"/{bin,dev,proc,sys,tmp,run,etc,root,lib/modules,usr/share/udhcpc}
chmod 1777 -- "$ROOT/tmp"
cp -- "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 -- "$ROOT/bin/busybox"
while IFS= read -r applet; do
    [[ -n "$applet" && "$applet" != busybox ]] || continue
    ln -sf busybox "$ROOT/bin/$applet"
done < <("$BUSYBOX" --list)
ln -s bin "$ROOT/sbin"

# Copy (and decompress) the wanted modules; record load order.
: > "$ROOT/lib/modules/order"
loaded=()
for mod in "${MODULES[@]}"; do
    src=$(find "$MODDIR" -type f \( -name "${mod}.ko" -o -name "${mod}.ko.xz" \
            -o -name "${mod}.ko.zst" -o -name "${mod}.ko.gz" \) -print -quit)
    if [[ -z "$src" ]]; then
        log "module $mod not found (built in?), skipping"
        continue
    fi
    dst="$ROOT/lib/modules/${mod}.ko"
    case "$src" in
        *.ko.xz)  xz -dc -- "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc -- "$src" > "$dst" ;;
        *.ko.gz)  gzip -dc -- "$src" > "$dst" ;;
        *)        cp -- "$src" "$dst" ;;
    esac
    echo "$mod" >> "$ROOT/lib/modules/order"
    loaded+=("$mod")
done
log "modules packed (kernel $KVER): ${loaded[*]:-none}"

echo "$GUEST_HOSTNAME" > "$ROOT/etc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"

cat > "$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc event script: configure the interface and report the lease.
case "$1" in
    deconfig)
        ip addr flush dev "$interface" 2>/dev/null
        ip link set "$interface" up
        ;;
    bound|renew)
        ip addr flush dev "$interface" 2>/dev/null
        ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
        ip link set "$interface" up
        if [ -n "$router" ]; then
            while ip route del default dev "$interface" 2>/dev/null; do :; done
            for r in $router; do
                ip route add default via "$r" dev "$interface" && break
            done
        fi
        : > /etc/resolv.conf
        [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        [ -n "$hostname" ] && hostname "$hostname"
        echo "IAAS-DHCP-LEASE $ip"
        ;;
    leasefail|nak)
        ;;
esac
exit 0
EOF
chmod 0755 -- "$ROOT/usr/share/udhcpc/default.script"

if [[ "$ACPI_MODE" == poweroff ]]; then
    # busybox acpid maps the power button (event PWRF) to the script etc/acpi/PWRF/00000080.
    mkdir -p -- "$ROOT/etc/acpi/PWRF"
    printf '#!/bin/sh\necho IAAS-ACPI-POWER-BUTTON > /dev/console\nsync\npoweroff -f\n' \
        > "$ROOT/etc/acpi/PWRF/00000080"
    chmod 0755 -- "$ROOT/etc/acpi/PWRF/00000080"
fi

cat > "$ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 dev /dev
[ -e /dev/console ] && exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs /run 2>/dev/null

while read -r mod; do
    [ -n "$mod" ] || continue
    insmod "/lib/modules/$mod.ko" 2>/dev/null || echo "tiny-init: insmod $mod failed"
done < /lib/modules/order

echo "IAAS-TINY-BOOT-OK"

if [ -d /etc/acpi ]; then
    acpid -c /etc/acpi -l /tmp/acpid.log && echo "IAAS-ACPI-POWEROFF"
else
    echo "IAAS-ACPI-IGNORED"
fi

hostname "$(cat /etc/hostname)"

# The NoCloud seed: an ISO 9660 volume labelled cidata, read like cloud-init reads it.
is_seed() {
    # The primary volume descriptor (sector 16) has "CD001" at byte 1, the label at byte 40.
    [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
    label=$(dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')
    [ "$label" = cidata ] || [ "$label" = CIDATA ]
}
find_seed() {
    for blk in /sys/block/*; do
        dev=/dev/${blk##*/}
        # devtmpfs may lag a moment behind the driver
        n=0
        while [ ! -b "$dev" ] && [ "$n" -lt 10 ]; do
            sleep 0.1
            n=$((n + 1))
        done
        is_seed "$dev" && echo "$dev" && return 0
    done
    return 1
}
# Values may be quoted ("..." as the platform writes them, or '...'); print them bare.
unquote() { sed -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"; }
read_seed() {
    mkdir -p /run/seed
    seed=$(find_seed) && mount -t iso9660 -o ro "$seed" /run/seed 2>/dev/null || return 1
    name=$(sed -n 's/^local-hostname:[[:space:]]*//p' /run/seed/meta-data | head -n 1 \
        | tr -d '\r' | unquote)
    if [ -n "$name" ]; then
        hostname "$name"
        echo "$name" > /etc/hostname
        printf 'IAAS-SEED-HOSTNAME %s\n' "$name"
    fi
    # The entries of the top-level ssh_authorized_keys list, one per line.
    awk '/^ssh_authorized_keys:/ { keys = 1; next }
         keys && /^[ \t]+- / { sub(/^[ \t]+- +/, ""); sub(/[ \t\r]+$/, ""); print; next }
         { keys = 0 }' /run/seed/user-data | unquote | while IFS= read -r key; do
        printf 'IAAS-SEED-SSH-KEY %s\n' "$key"
    done
    # The user's own part of a MIME archive is base64: read it decoded too.
    { cat /run/seed/user-data
      awk '/^Content-Transfer-Encoding: base64/ { b = 1; h = 1; next }
           b && h && /^\r?$/ { h = 0; next }
           b && !h && /^--/ { b = 0; next }
           b && !h { print }' /run/seed/user-data | base64 -d 2>/dev/null
    } > /run/user-data.txt
    probe_url=$(sed -n 's/^iaas_probe_url:[[:space:]]*//p' /run/user-data.txt | head -n 1 \
        | tr -d '\r' | unquote)
    [ -n "$probe_url" ] && echo "$probe_url" > /run/probe-url
    umount /run/seed
}
read_seed || echo "IAAS-SEED-NONE"

# Reachability of another guest: print only when the answer changes.
probe() {
    last=""
    while true; do
        if timeout 3 wget -q -O /tmp/probe.out "$1" 2>/dev/null; then now=OK; else now=FAIL; fi
        if [ "$now" != "$last" ]; then
            printf 'IAAS-PROBE-%s %s\n' "$now" "$1"
            last=$now
        fi
        sleep 1
    done
}

# Extra disks: every virtio disk but the root and the seed, reported as it comes and goes.
disk_seen() {
    dev=/dev/$1
    n=0
    while [ ! -b "$dev" ] && [ "$n" -lt 20 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    is_seed "$dev" && return 1
    serial=$(cat "/sys/block/$1/serial" 2>/dev/null)
    first=$(dd if="$dev" bs=512 count=1 2>/dev/null | tr -d '\000' | head -n 1 | cut -c 1-200)
    case "$first" in
        IAAS-DATA*) data=$first ;;
        *) data=- ;;
    esac
    printf 'IAAS-DISK-SEEN %s serial=%s ro=%s data=%s\n' "$1" "${serial:--}" \
        "$(cat "/sys/block/$1/ro" 2>/dev/null || echo 0)" "$data"
    stamp="IAAS-DATA $(hostname) $(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
    if printf '%s\n' "$stamp" | dd of="$dev" bs=512 count=1 conv=sync,fsync 2>/dev/null \
            && sync; then
        printf 'IAAS-DISK-WROTE %s %s\n' "$1" "$stamp"
    else
        printf 'IAAS-DISK-WRITE-FAILED %s\n' "$1"
    fi
    return 0
}
# Entries of the lists below are " name ", so a case pattern matches whole names only.
watch_disks() {
    root=$1
    known=""
    reported=""
    while true; do
        present=""
        for blk in /sys/block/vd*; do
            [ -e "$blk" ] || continue
            name=${blk##*/}
            present="$present $name "
            case "$known" in *" $name "*) continue ;; esac
            known="$known $name "
            if [ "$name" != "$root" ] && disk_seen "$name"; then
                reported="$reported $name "
            fi
        done
        for name in $known; do
            case "$present" in *" $name "*) continue ;; esac
            known=$(echo "$known" | sed "s/ $name //")
            case "$reported" in
                *" $name "*)
                    reported=$(echo "$reported" | sed "s/ $name //")
                    printf 'IAAS-DISK-GONE %s\n' "$name"
                    ;;
            esac
        done
        sleep 0.5
    done
}

ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null

# wait briefly for eth0 to appear (virtio_net probes asynchronously)
n=0
while [ ! -e /sys/class/net/eth0 ] && [ "$n" -lt 50 ]; do
    sleep 0.1
    n=$((n + 1))
done
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    # wait (max ~3 s) for carrier so the first DISCOVER is not lost
    n=0
    while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ "$n" -lt 30 ]; do
        sleep 0.1
        n=$((n + 1))
    done
    if udhcpc -i eth0 -t 10 -T 2 -n -q -s /usr/share/udhcpc/default.script; then
        :
    else
        echo "IAAS-DHCP-FAILED"
    fi
else
    echo "IAAS-DHCP-FAILED"
fi

# The root: the first virtio disk at boot, where the platform puts the disk it boots from.
root_disk=$(ls /sys/block | grep '^vd' | head -n 1)
watch_disks "$root_disk" &

mkdir -p /www
printf 'IAAS-HTTP %s\n' "$(hostname)" > /www/index.html
httpd -p 80 -h /www && echo "IAAS-HTTPD-UP"
[ -s /run/probe-url ] && probe "$(cat /run/probe-url)" &

echo "IAAS-TINY-READY"

while true; do
    setsid cttyhack sh -l
    sleep 1
done
EOF
chmod 0755 -- "$ROOT/init"

INITRD="$WORK/initrd.gz"
(cd -- "$ROOT" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 > "$INITRD"

# --- FAT boot disk ----------------------------------------------------------
KERNEL_IMG="$WORK/vmlinuz"
cp -- "${vmlinuz[0]}" "$KERNEL_IMG"

cat > "$WORK/syslinux.cfg" <<EOF
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
    KERNEL vmlinuz
    APPEND initrd=initrd.gz console=ttyS0,115200 panic=10 ${APPEND_EXTRA}
EOF

kbytes=$(( ( $(stat -c %s "$KERNEL_IMG") + $(stat -c %s "$INITRD") ) / 1024 ))
fat_kib=$(( kbytes + 4096 ))
RAW="$WORK/disk.raw"
mkfs.vfat -C -n TINYBOOT "$RAW" "$fat_kib" >/dev/null
syslinux --install "$RAW"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$RAW" "$KERNEL_IMG" ::vmlinuz
mcopy -i "$RAW" "$INITRD" ::initrd.gz
mcopy -i "$RAW" "$WORK/syslinux.cfg" ::syslinux.cfg

rm -f -- "$TMP_OUT"
qemu-img convert -f raw -O qcow2 "$RAW" "$TMP_OUT"
mv -f -- "$TMP_OUT" "$OUTPUT"

log "built $OUTPUT ($(stat -c %s "$OUTPUT") bytes, kernel $KVER) in $((SECONDS - START))s"
