//go:build linux

package host

import (
	"syscall"

	"github.com/baton-sh/baton/internal/sockets"
)

// grace speaks the parent side of github.com/facebookgo/grace (gracehttp
// and gracenet), so that an unmodified grace app is a worker.
//
// A grace app finds its listeners from fd 3 on, LISTEN_FDS of them
// (systemd's variables, which it reads without LISTEN_PID), matched to
// the addresses it asks for; and once it serves, if it inherited them, it
// sends SIGTERM to its parent unless that is PID 1. Here the parent is
// the parent stub, which takes that SIGTERM as READY=1. The app drains on
// SIGTERM, baton's default drain signal. grace restarts itself on USR2:
// do not send it one, HUP is baton's.
type grace struct {
	drain syscall.Signal
}

func (g grace) handoff(s Start, socks []*sockets.Socket, notifySocket string) (*handoff, error) {
	h := &handoff{env: withWorker(sockets.WorkerEnv(s.Release.Env, socks, notifySocket), s)}
	for _, sock := range socks {
		h.files = append(h.files, sock.File)
	}
	return withParentStub(h, g.drain)
}
