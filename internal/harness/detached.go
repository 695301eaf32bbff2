package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/upgrader"
)

// Detached is a master whose stderr belongs to the test, as a file the
// test may stall, break or never read, so its log is not followed: the
// test watches it through its control socket, its pidfile and /proc.
type Detached struct {
	*master
	Control string // its control socket, next to the pidfile
}

// StartDetached runs baton with args (its flags, "--" and the worker
// command), adding --pidfile and --log-format json, with stderr as its
// standard error and env added to the test's environment. It does not
// wait for anything. The master is killed, if still running, when the
// test ends.
func StartDetached(t testing.TB, stderr *os.File, env []string, args ...string) *Detached {
	t.Helper()
	d := &Detached{master: newMaster(t, Setup{Env: env}, args)}
	d.Control = control.DefaultPath(d.PIDFile)
	d.Cmd.Stderr = stderr
	d.start(t, nil)
	return d
}

// Wait waits up to limit for the master to exit and describes how it
// ended: "exit status N" or "signal: …".
func (d *Detached) Wait(t testing.TB, limit time.Duration) string {
	t.Helper()
	err := d.waitExit(t, limit)
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// Status asks the master for its status over the control socket, giving
// up after limit.
func (d *Detached) Status(limit time.Duration) (upgrader.Status, error) {
	resp, _, err := control.Ask(d.Control, control.Request{Command: "status"}, limit)
	if err != nil {
		return upgrader.Status{}, err
	}
	if !resp.OK || resp.Status == nil {
		return upgrader.Status{}, fmt.Errorf("status: %s", resp.Error)
	}
	return *resp.Status, nil
}

// WaitServing polls the master's status until generation gen or a later
// one serves, failing the test after limit or if the master exits.
func (d *Detached) WaitServing(t testing.TB, limit time.Duration, gen int) upgrader.Status {
	t.Helper()
	var st upgrader.Status
	var err error
	Eventually(t, limit, fmt.Sprintf("generation %d serving", gen), func() bool {
		if d.Exited() {
			t.Fatalf("baton exited (%v) before generation %d served", d.err, gen)
		}
		st, err = d.Status(time.Second)
		return err == nil && st.Generation >= gen && len(st.Workers) == 1
	})
	return st
}
