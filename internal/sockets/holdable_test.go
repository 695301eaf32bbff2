package sockets_test

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/sockets"
)

// The master holds sockets of two origins: files of its own Go listeners,
// and descriptors a service manager passed, possibly non-blocking. Either
// way the held file starts blocking, stays out of the master's poller, and
// its Fd leaves alone the O_NONBLOCK a Go worker sets on the shared socket.
func TestHoldableFileKeepsTheWorkersMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		file func(l *net.TCPListener) *os.File
	}{
		{"file of a Go listener", func(l *net.TCPListener) *os.File {
			f, err := l.File()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{"descriptor passed non-blocking", func(l *net.TCPListener) *os.File {
			f, err := l.File()
			if err != nil {
				t.Fatal(err)
			}
			fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			unix.SetNonblock(fd, true)
			return os.NewFile(uintptr(fd), "passed") // as Inherited makes it
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			held, err := sockets.Holdable(tc.file(l))
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			if nonblocking(t, held) {
				t.Fatal("held socket is non-blocking; it must start blocking, as systemd passes it")
			}
			worker, err := net.FileListener(held) // sets O_NONBLOCK, as any Go worker does
			if err != nil {
				t.Fatal(err)
			}
			defer worker.Close()
			held.Fd() // what the master does at every worker start
			if !nonblocking(t, held) {
				t.Fatal("Fd of the held file cleared the worker's O_NONBLOCK: an old Go worker would block in accept(2) and never drain")
			}
		})
	}
}
