//go:build linux && arm64

package accepting

// waitOf classifies the system call a thread is blocked in, by its arm64
// number (include/uapi/asm-generic/unistd.h). arm64 has no poll or select
// system calls: libc implements them with ppoll and pselect6. A 32-bit
// (compat) process reports arm numbers, which this table does not know:
// such a process is seen through epoll only.
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
	}
	return 0
}
