#!/bin/sh
# A wrapper that stays: starts the server, says READY=1 for it once it
# accepts, and passes the drain signal on.
#   baton --listen http=tcp://127.0.0.1:3000 -- examples/shell/notify.sh
cd "$(dirname "$0")/../node"
# The server is a child: LISTEN_PID must be its PID ($$ of the sh that
# execs it), not this shell's, or it does not take the sockets.
sh -c 'LISTEN_PID=$$ exec node server.js' &
server=$!
# Set before READY=1: baton drains a generation only once it is ready.
trap 'kill -TERM $server' TERM
# Ready once the server watches fd 3, the socket, in an epoll set: node
# then accepts, and has set up its own SIGTERM handler (before listening).
until grep -qs '^tfd: *3 ' /proc/$server/fdinfo/*; do
	kill -0 $server 2>/dev/null || exit 1
	sleep 0.02
done
# From a child of this shell: --notify-access all (baton's default)
# takes READY=1 from any process of the worker's process group.
systemd-notify --ready
wait $server # interrupted by TERM, which the trap passes on,
wait $server # then waits for the server's drain; its status is ours
