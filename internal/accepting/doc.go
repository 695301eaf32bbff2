// Package accepting tells whether a starting generation of workers waits
// for connections on the master's sockets: the readiness of
// `--ready accepting`, for servers that cannot send READY=1 (Node.js,
// uvicorn, puma, Express, anything that takes fd 3 and serves).
//
// A generation waits on a socket once one of its processes has a thread
// blocked in accept(2) on it (recvfrom and friends for a datagram
// socket), a thread blocked in poll(2) or select(2) with it in the read
// set, or the socket registered for reading in one of its epoll sets.
// Check reads this from /proc: /proc/PID/task/TID/syscall for the blocked
// threads (with /proc/PID/mem for the sets of poll and select), and the
// fdinfo of each epoll fd, whose lines name each watched file by inode.
// Sockets are matched by inode, never by fd number: runtimes dup fd 3.
//
// The generation is the process baton started and its descendants. A
// socket shared by two generations is waited on by the old one too; only
// the processes of the generation asked about count.
package accepting
