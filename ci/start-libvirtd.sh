#!/usr/bin/env bash
# Start virtlogd and libvirtd as daemons (no systemd) unless they already run, then wait
# until qemu:///system answers (60 s at most). Leaves them running; stop them by pid
# (/run/libvirtd.pid, /run/virtlogd.pid), never by name.
set -euo pipefail

alive() { # alive PIDFILE: the pid in PIDFILE is a live process
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

if alive /run/virtlogd.pid; then
    echo "start-libvirtd: virtlogd already running (pid $(cat /run/virtlogd.pid))"
else
    virtlogd -d
    echo "start-libvirtd: started virtlogd"
fi

if alive /run/libvirtd.pid; then
    echo "start-libvirtd: libvirtd already running (pid $(cat /run/libvirtd.pid))"
else
    libvirtd -d
    echo "start-libvirtd: started libvirtd"
fi

deadline=$((SECONDS + 60))
until virsh -c qemu:///system version >/dev/null 2>&1; do
    if ((SECONDS >= deadline)) || { ((SECONDS > 5)) && ! alive /run/libvirtd.pid; }; then
        echo "start-libvirtd: qemu:///system did not answer (libvirtd dead or 60 s passed)" >&2
        tail -n 30 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
        exit 1
    fi
    sleep 1
done
virsh -c qemu:///system version
