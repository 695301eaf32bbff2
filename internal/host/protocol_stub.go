//go:build linux

package host

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/baton-sh/baton/internal/envnames"
)

// The environment of internal/parentstub, which cmd/baton imports.
const (
	stubEnv        = envnames.ParentStub
	stubEnvControl = envnames.StubControl
	stubEnvDrain   = envnames.StubDrain
)

// withParentStub makes h start the parent stub of internal/parentstub as
// the generation's main process, which starts the app as its child: for
// apps that signal their parent once they serve (endless, grace). The stub
// turns the app's SIGTERM into READY=1 on NOTIFY_SOCKET, and the master's
// signals to the generation reach the app through a pipe, one byte each,
// so that the stub never confuses them with the app's.
func withParentStub(h *handoff, drain syscall.Signal) (*handoff, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("parent stub pipe: %w", err)
	}
	h.stub = true
	h.env = append(h.env,
		stubEnvControl+"="+strconv.Itoa(3+len(h.files)),
		stubEnvDrain+"="+strconv.Itoa(int(drain)))
	h.files = append(h.files, r)
	h.started = func(pid int, ready func(int)) {
		r.Close() // the stub has its own
		if pid == 0 {
			w.Close()
		}
	}
	h.signal = func(sig syscall.Signal) error {
		if _, err := w.Write([]byte{byte(sig)}); err != nil {
			return syscall.ESRCH // the stub is gone
		}
		return nil
	}
	h.done = func() { w.Close() }
	return h, nil
}
