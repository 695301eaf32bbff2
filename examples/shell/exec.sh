#!/bin/sh
# A wrapper that prepares, then becomes the server:
#   baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- examples/shell/exec.sh
set -e
cd "$(dirname "$0")/../node"
export NODE_ENV=production # whatever the server needs first
# exec: the server takes this shell's PID, so LISTEN_PID is its own, and
# baton's drain signal reaches it, not a shell that would die of it.
exec node server.js
