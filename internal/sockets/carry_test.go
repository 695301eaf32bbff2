package sockets_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/notify"
)

// A socket duplicated for an exec (Dup) is left as it was, so that, should
// the exec not happen, a receive in progress on it still ends when it is
// closed. (net's File and then Fd made it blocking: the receive then sat
// in recvmsg and Close waited for it.)
func TestDupLeavesTheSocketAsItWas(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	received := make(chan error, 1)
	go func() {
		_, err := s.Receive()
		received <- err
	}()
	fd, err := sockets.Dup(s)
	if err != nil {
		t.Fatal(err)
	}
	if flags, _, err := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); err != 0 || flags&syscall.FD_CLOEXEC == 0 {
		t.Errorf("the duplicate is not close-on-exec: flags %#x, %v", flags, err)
	}
	syscall.Close(fd) // the exec did not happen
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close of a duplicated socket hung while a receive waited")
	}
	if err := <-received; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the receive in progress ended with %v, want %v", err, net.ErrClosed)
	}
}
