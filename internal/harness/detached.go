package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/upgrader"
)

// Detached is a master whose stderr belongs to the test, as a file the
// test may stall, break or never read, so its log is not followed: the
// test watches it through its control socket, its pidfile and /proc.
type Detached struct {
	Cmd     *exec.Cmd
	PIDFile string
	Control string
	Dir     string

	exited chan struct{}
	err    error
}

// StartDetached runs baton with args (its flags, "--" and the worker
// command), adding --pidfile and --log-format json, with stderr as its
// standard error and env added to the test's environment. It does not
// wait for anything. The master is killed, if still running, when the
// test ends.
func StartDetached(t testing.TB, stderr *os.File, env []string, args ...string) *Detached {
	t.Helper()
	bin := Build(t)
	dir := t.TempDir()
	d := &Detached{PIDFile: filepath.Join(dir, "baton.pid"), Dir: dir, exited: make(chan struct{})}
	d.Control = control.DefaultPath(d.PIDFile)
	full := append([]string{"--pidfile", d.PIDFile, "--log-format", "json", "--log-level", "debug"}, args...)
	d.Cmd = exec.Command(bin.Baton, full...)
	d.Cmd.Env = append(append(os.Environ(), ProcessEnv...), env...)
	d.Cmd.Dir = dir
	d.Cmd.Stderr = stderr
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.Cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() { Terminate(d.Cmd.Process, d.exited, syscall.SIGQUIT, 10*time.Second) })
	return d
}

// PID is the master's PID.
func (d *Detached) PID() int { return d.Cmd.Process.Pid }

// Exited reports whether the master has exited.
func (d *Detached) Exited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

// Wait waits up to limit for the master to exit and describes how it
// ended: "exit status N" or "signal: …".
func (d *Detached) Wait(t testing.TB, limit time.Duration) string {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(limit):
		t.Fatalf("baton (pid %d) still running after %s", d.PID(), limit)
	}
	if d.err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ProcessState.String()
	}
	return d.err.Error()
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
