#!/usr/bin/env bash
# The chpox demo: start a program, checkpoint it, kill it, restore it, and
# watch it go on from the checkpoint. Run it as root: make demo
set -euo pipefail
cd "$(dirname "$0")/.."
# Descriptors leaked by whatever started us must not reach the demo program.
for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null || true; done

work=$(mktemp -d /tmp/chpox-demo.XXXXXX)
chpox=$PWD/bin/chpox
gcc -O1 -o "$work/demo" testdata/demo.c
cd "$work"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "start ./demo: one step every 0.3 s, output in demo.log"
./demo > demo.log 2>&1 < /dev/null &
pid=$!
sleep 2
tail -n 3 demo.log

say "chpox dump $pid -o demo.chp   (the program keeps running)"
"$chpox" dump "$pid" -o demo.chp
echo "checkpoint taken at: $(tail -n 1 demo.log)"
ls -l demo.chp
"$chpox" inspect demo.chp | sed -n '1,6p'
sleep 1
say "kill -9 $pid   (simulating a crash or reboot)"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
echo "last line before the kill: $(tail -n 1 demo.log)"

say "chpox restore --detach demo.chp   (same PID, same open files, same memory)"
restored=$("$chpox" restore --detach demo.chp)
echo "restored as pid $restored"
sleep 2
say "demo.log now: the program went on from the checkpoint (its output offset too), same checksums"
tail -n 8 demo.log
kill -9 "$restored"
say "done (files in $work)"
