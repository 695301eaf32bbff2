// Package accepting tells whether a starting generation of workers waits
// for connections on the master's sockets: the readiness of
// --ready accepting, for servers that cannot send READY=1 (Node.js and
// Express, uvicorn, anything that takes fd 3 and serves).
//
// # What counts
//
// A generation waits on a socket once a thread of one of its processes is
// blocked in the kernel waiting for it:
//
//   - in accept(2) or accept4(2) on it (recvfrom, recvmsg or recvmmsg for
//     a datagram socket);
//   - in poll(2) or ppoll(2) with it in the set, for reading;
//   - in select(2) or pselect6(2) with it in the read set;
//   - in epoll_wait (epoll_pwait, epoll_pwait2) on an epoll set where it
//     is registered for reading: an event loop between two events.
//
// The thread's system call and its arguments come from
// /proc/PID/task/TID/syscall; the sets of poll and select from
// /proc/PID/mem at the address in the arguments; an epoll set's
// registrations from the fdinfo of its fd, one line per watched file with
// its inode. Sockets are matched by inode, never by fd number, since
// runtimes dup fd 3: NewSockets takes the inodes from the master's own
// files with fstat, leaving their blocking mode alone.
//
// The generation is the process baton started and its descendants,
// whatever their process group. A socket shared by two generations is
// waited on by the old one too: only the processes of the generation
// asked about count, so an old generation never makes a new one ready, and
// neither does a process that only holds the socket (a server still
// loading, a pre-fork arbiter whose workers have not booted).
//
// Tested with the real runtimes, each seen only once it serves and never
// while it merely holds the socket:
//
//	Node.js 20 listen({fd: 3})        epoll_wait, main thread
//	Go net/http on net.FileListener   epoll_wait, the netpoller's thread
//	uvicorn --fd 3 (asyncio)          epoll_wait, main thread
//	gunicorn --worker-class gthread   epoll_wait, in a worker (a child)
//	gunicorn sync workers             select, in a worker
//	puma 5 (LISTEN_FDS)               select, its "puma srv" thread
//	Python socketserver               poll
//	Python blocking accept            accept, in a thread
//	Python UDP recvfrom               recv
//
// # Cost
//
// A one-off Check reads, for each thread of the generation, its syscall and
// children files, plus an epoll set's fdinfo or a poll or select set for a
// thread waiting in one: a handful of reads per thread, independent of the
// number of processes on the host but not of the number of threads. That
// is fine once (NeverReadyHint), not at every interval: with 300 threads,
// checking every 5 ms that way took two thirds of a CPU.
//
// A Watcher (which Wait uses) looks at all threads once, then only at a
// bounded number per Check (see Watcher): one short read of each thread
// likely to wait soon, and of ColdPerCheck others in turn, plus the files
// of those that ran. The threads of the Go server of BenchmarkWatcherThreads
// (holding the socket, with 1, 300 or 2,000 idle threads besides the
// runtime's) cost 6, 17 and 17 reads a Check, 13, 46 and 46 µs back to
// back on a 2-vCPU VM. The master's own CPU time while a generation starts
// (a worker with N idle threads that waits 10 s before it serves, measured
// over 8 s on that VM, loaded) went from 8%, 67% and 100% of a CPU for 1,
// 300 and 2,000 threads to 1.5%, 3% and 2-5% of one while the worker
// sleeps, and to 3-5%, 5-6% and 6-7% while it keeps a CPU busy (so Wait
// never slows down to IdleInterval). Most of what is left is the Go
// runtime waking up at every interval. None of it while baton is idle:
// Wait runs only while a generation starts.
//
// # What it cannot see
//
//   - A server whose waiting is not a blocked system call on the socket:
//     accept through io_uring, a loop that busy-polls (epoll_wait with a
//     zero timeout, SO_BUSY_POLL) or is woken by signals (O_ASYNC), a
//     listener registered only in an epoll set nested in another one.
//   - A loop that is busy at the instant of a Check: it is seen at the
//     first Check that finds it waiting again.
//   - Processes it may not inspect: another user's (a worker that drops
//     privileges) or a non-dumpable one, unless the master runs as root;
//     any process under Yama's ptrace_scope 2 unless the master has
//     CAP_SYS_PTRACE, and under ptrace_scope 3 at all, since the syscall
//     and mem files need ptrace access (scope 1 lets the master, an
//     ancestor, in). Check then returns an error (errors.Is(err,
//     fs.ErrPermission)) instead of a silent "not found".
//   - A process that left the tree: re-parented to init or a subreaper
//     after its parent exited, even in root's process group.
//   - 32-bit processes on a 64-bit kernel, and architectures other than
//     amd64 and arm64, whose system call numbers it does not know.
//
// And what it sees may be early. A Go program's netpoller waits in
// epoll_wait on every socket the program adopted, so a listener made with
// net.FileListener counts as waited on before Serve is called; Go servers
// should send READY=1 (listener.ServeHTTP does). For servers it cannot
// see, use --ready notify with the server's own sd_notify support
// (gunicorn; puma, which sends READY=1 once booted when NOTIFY_SOCKET is
// set; anything that can write one datagram), or --ready delay=DUR.
//
// A generation that never sent READY=1 under --ready notify can still be
// seen waiting: NeverReadyHint turns that into a hint for the failure
// message.
package accepting
