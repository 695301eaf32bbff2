#!/bin/sh
# A wrapper that neither execs nor traps: the shell dies of TERM at once.
#   baton --listen http=tcp://127.0.0.1:3000 --ready accepting --drain-group -- examples/shell/plain.sh
# --drain-group sends the drain signal to the whole process group, so the
# server gets it too and drains.
cd "$(dirname "$0")/../node"
sh -c 'LISTEN_PID=$$ exec node server.js'
echo "server exited with status $?"
