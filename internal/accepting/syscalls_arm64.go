//go:build linux && arm64

package accepting

// waitOf classifies the system call a thread is blocked in, by its arm64
// number (include/uapi/asm-generic/unistd.h). arm64 has no poll, select or
// epoll_wait system calls: libc implements them with ppoll, pselect6 and
// epoll_pwait. A 32-bit (compat) process reports arm numbers, which this
// table does not know: such a process is never seen waiting.
func waitOf(nr int) Via {
	switch nr {
	case 202, 242: // accept, accept4
		return Accept
	case 207, 212, 243: // recvfrom, recvmsg, recvmmsg
		return Recv
	case 73: // ppoll
		return Poll
	case 72: // pselect6
		return Select
	case 22, 441: // epoll_pwait, epoll_pwait2
		return Epoll
	}
	return 0
}
