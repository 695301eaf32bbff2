//go:build linux && amd64

package accepting

// waitOf classifies the system call a thread is blocked in, by its x86_64
// number (arch/x86/entry/syscalls/syscall_64.tbl). A 32-bit process on a
// 64-bit kernel reports i386 numbers, which this table does not know: such
// a process is never seen waiting.
func waitOf(nr int) Via {
	switch nr {
	case 43, 288: // accept, accept4
		return Accept
	case 45, 47, 299: // recvfrom, recvmsg, recvmmsg
		return Recv
	case 7, 271: // poll, ppoll
		return Poll
	case 23, 270: // select, pselect6
		return Select
	case 232, 281, 441: // epoll_wait, epoll_pwait, epoll_pwait2
		return Epoll
	}
	return 0
}
