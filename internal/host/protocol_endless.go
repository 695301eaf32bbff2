//go:build linux

package host

import (
	"strings"
	"syscall"

	"github.com/baton-sh/baton/internal/sockets"
)

// endless speaks the parent side of github.com/fvbock/endless, so that an
// unmodified endless app is a worker.
//
// An endless app started with ENDLESS_CONTINUE set takes its listeners
// from fd 3 on, in the order of the addresses in ENDLESS_SOCKET_ORDER
// (each the string the app passes to endless.ListenAndServe; without it,
// in the order the app creates its servers), and once it listens it sends
// SIGTERM to its parent, which under endless is the old process. Here the
// parent is the parent stub, which takes that SIGTERM as READY=1. The
// app drains on SIGTERM, baton's default drain signal. endless forks a
// child of its own on SIGHUP: baton never sends it one, HUP is baton's.
type endless struct {
	drain syscall.Signal
}

func (e endless) handoff(s Start, socks []*sockets.Socket, notifySocket string) (*handoff, error) {
	h := &handoff{env: append(withWorker(sockets.WorkerEnv(s.Release.Env, nil, notifySocket), s), "ENDLESS_CONTINUE=1")}
	var order []string
	for _, sock := range socks {
		h.files = append(h.files, sock.File)
		order = append(order, sock.Spec.Address)
	}
	if len(socks) > 1 {
		h.env = append(h.env, "ENDLESS_SOCKET_ORDER="+strings.Join(order, ","))
	}
	return withParentStub(h, e.drain)
}
