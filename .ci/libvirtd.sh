#!/usr/bin/env bash
# libvirtd.sh sets up and starts a real libvirtd (with virtlogd) for the
# libvirt integration tests, following /work/shared/libvirt-host.md:
#
#   .ci/libvirtd.sh         install, configure and start (idempotent);
#                           prints the directory holding the pid files
#   .ci/libvirtd.sh stop    stop exactly the daemons this script started
#
# The state directory is $BUILDSLAVE_LIBVIRTD_DIR (default
# /run/buildslave-libvirtd). Tests find the daemon by its socket,
# /var/run/libvirt/libvirt-sock.
set -euo pipefail

dir=${BUILDSLAVE_LIBVIRTD_DIR:-/run/buildslave-libvirtd}
sock=/var/run/libvirt/libvirt-sock
daemons=(virtlogd libvirtd)

running() { # running NAME: true if NAME's pid file names a live process of that name
  local pidfile=$dir/$1.pid pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

stop() {
  local d pid i
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
    d=${daemons[i]}
    if running "$d"; then
      pid=$(cat "$dir/$d.pid")
      kill "$pid"
      for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
      [ -d "/proc/$pid" ] && kill -9 "$pid"
      echo "stopped $d (pid $pid)"
    fi
    rm -f "$dir/$d.pid"
  done
}

install() {
  local packages=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils cpio)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

configure() {
  getent group kvm >/dev/null || groupadd --system kvm
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null ||
    useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
      --gid libvirt-qemu --groups kvm libvirt-qemu
  local conf=/etc/libvirt/qemu.conf
  if ! grep -q '^# buildslave' "$conf" 2>/dev/null; then
    mkdir -p /etc/libvirt
    [ -f "$conf" ] && [ ! -f "$conf.orig" ] && cp "$conf" "$conf.orig"
    cat >"$conf" <<'CONF'
# buildslave: QEMU runs as root without a security driver (no systemd, a container).
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
remember_owner = 0
CONF
  fi
  mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/run/libvirt "$dir"
}

start() {
  install
  configure
  running virtlogd || virtlogd --daemon --pid-file "$dir/virtlogd.pid"
  running libvirtd || libvirtd --daemon --pid-file "$dir/libvirtd.pid"
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { echo "libvirtd.sh: $sock did not appear" >&2; exit 1; }
  echo "$dir"
}

case ${1:-start} in
start) start ;;
stop) stop ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
