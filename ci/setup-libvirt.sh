#!/usr/bin/env bash
# Install and configure libvirt 9.0 + QEMU 7.2 (Debian 12) for the real-hypervisor tests,
# then start the daemons (ci/start-libvirtd.sh). Idempotent: every step checks first.
# Runs as root, with or without systemd (see shared/docs/real-qemu.md sections 1-2).
set -euo pipefail

PACKAGES=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
    qemu-system-x86 qemu-utils libnbd-bin
    virtnbdbackup  # a real backup tool against the guest (tests/e2e/test_virtnbdbackup.py)
    chromium  # headless screenshots of `ckpt-ledger timeline` pages (tests/test_timeline.py)
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "setup-libvirt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "setup-libvirt: packages already installed"
fi

# The Debian packages do not create the qemu user or the log/run directories without systemd.
# libvirt 9.0's QEMU driver resolves its built-in user AND group libvirt-qemu at start-up,
# before reading qemu.conf ("Failed to parse group 'libvirt-qemu'"), so both must exist.
getent group kvm >/dev/null || groupadd -r kvm  # a system group, as udev expects
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g kvm libvirt-qemu
mkdir -p /var/log/libvirt /run/libvirt /etc/libvirt

QEMU_CONF=/etc/libvirt/qemu.conf
MARK="# ckpt-ledger CI settings"
if ! grep -qF "$MARK" "$QEMU_CONF" 2>/dev/null; then
    printf '%s\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\ncgroup_controllers = [ ]\n' \
        "$MARK" >>"$QEMU_CONF"
    echo "setup-libvirt: configured $QEMU_CONF"
fi

exec "$(dirname "$0")/start-libvirtd.sh"
