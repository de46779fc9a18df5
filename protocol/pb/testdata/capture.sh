#!/bin/sh
# capture.sh NAME: makes capture-NAME.txt (relay.py's lines) and capture-NAME.decoded.txt
# (decode.py's transcript) from the stock Buildbot 3.7 master and worker,
# run under /srv/bb with an empty environment. NAME is one of build,
# badpassword, keepalive, interrupt. Needs the Debian buildbot and
# buildbot-worker packages; uses 127.0.0.1:29989 (master) and :29990 (relay).
set -eu
name=$1
here=$(cd "$(dirname "$0")" && pwd)
out=$(pwd)
B=/srv/bb
clean() { env -i PATH=/usr/bin:/bin HOME=$B LANG=C.UTF-8 "$@"; }
worker() { env -i PATH=/usr/bin:/bin HOME=$B/w LANG=C.UTF-8 "$@"; }
mkdir -p $B
rm -rf $B/m $B/w $B/cap.txt
clean buildbot create-master -r $B/m >/dev/null
cp "$here/master.cfg" $B/m/master.cfg
echo "downloaded bytes" > $B/m/download.txt
password=stock-secret keepalive=600 capture=build
case $name in
build) ;;
badpassword) password=wrong-secret capture=idle ;;
keepalive) keepalive=2 capture=idle ;;
interrupt) capture=interrupt ;;
*) echo "unknown capture $name" >&2; exit 2 ;;
esac
worker buildbot-worker create-worker -r --keepalive=$keepalive $B/w 127.0.0.1:29990 stock $password >/dev/null
/usr/bin/python3 "$here/relay.py" 29990 29989 $B/cap.txt 1 &
relay=$!
stop() {
  worker buildbot-worker stop $B/w >/dev/null 2>&1 || true
  clean buildbot stop $B/m >/dev/null 2>&1 || true
  kill $relay 2>/dev/null || true
}
trap stop EXIT INT TERM
clean CAPTURE=$capture buildbot start $B/m >/dev/null
cd $B && { worker buildbot-worker start $B/w >/dev/null || true; } # it reports a refused login as a failure
wait_log() { # wait_log FILE TEXT SECONDS
  i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    i=$((i + 1)); [ $i -le $(($3 * 10)) ] || { echo "timed out waiting for '$2' in $1" >&2; break; }
    sleep 0.1
  done
}
case $name in
build | interrupt) wait_log $B/m/twistd.log "build finished" 120 ;;
badpassword) wait_log $B/cap.txt "$(printf UnauthorizedLogin | od -An -tx1 | tr -d ' \n')" 30 ;;
keepalive) wait_log $B/m/twistd.log "attached to hello" 30; sleep 7 ;;
esac
stop
cp $B/cap.txt "$out/capture-$name.txt"
/usr/bin/python3 "$here/decode.py" "$out/capture-$name.txt" > "$out/capture-$name.decoded.txt"
[ -n "${KEEP:-}" ] || rm -rf $B/m $B/w $B/cap.txt
