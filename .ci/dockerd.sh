#!/usr/bin/env bash
# dockerd.sh sets up and starts a real Docker daemon (Debian's docker.io)
# for the docker integration tests, with its own state, like libvirtd.sh;
# it also installs busybox-static, the static /bin/sh of the example
# master's FROM scratch slave image:
#
#   .ci/dockerd.sh         install and start (idempotent); prints the
#                          daemon's DOCKER_HOST (unix://$dir/docker.sock)
#   .ci/dockerd.sh stop    stop exactly the daemon this script started,
#                          and remove its state directory
#
# The state directory is $BUILDSLAVE_DOCKERD_DIR (default
# /run/buildslave-dockerd): data root, exec root, socket, pid file and log
# all live under it, so this daemon shares nothing with another one on the
# machine. Tests find it through $BUILDSLAVE_DOCKER_HOST, or through the
# default socket path below when that variable is unset.
set -euo pipefail

dir=${BUILDSLAVE_DOCKERD_DIR:-/run/buildslave-dockerd}
sock=$dir/docker.sock
pidfile=$dir/dockerd.pid

running() { # true if the pid file names a live dockerd
  local pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

stop() {
  local pid
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid"
    # dockerd stops its containers first (up to 15 s each by default).
    for _ in $(seq 300); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -9 "$pid"
    echo "stopped dockerd (pid $pid)"
  fi
  rm -f "$pidfile"
  # Leftover mounts of the data root would make rm fail: unmount them first.
  if [ -d "$dir" ]; then
    grep -o " $dir/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir"
  fi
}

install() {
  local packages=(docker.io busybox-static) missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start() {
  install
  mkdir -p "$dir/root" "$dir/exec"
  if ! running; then
    # The Debian daemon, not whatever docker client is first on PATH.
    /usr/sbin/dockerd --data-root "$dir/root" --exec-root "$dir/exec" \
      -H "unix://$sock" --pidfile "$pidfile" >>"$dir/dockerd.log" 2>&1 </dev/null &
    disown
  fi
  for _ in $(seq 300); do
    /usr/bin/docker -H "unix://$sock" info >/dev/null 2>&1 && break
    sleep 0.1
  done
  /usr/bin/docker -H "unix://$sock" info >/dev/null 2>&1 || {
    echo "dockerd.sh: dockerd did not answer on $sock within 30 s; its log:" >&2
    tail -n 30 "$dir/dockerd.log" >&2
    exit 1
  }
  echo "unix://$sock"
}

case ${1:-start} in
start) start ;;
stop) stop ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
