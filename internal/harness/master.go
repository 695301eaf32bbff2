package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// master is what Baton and Detached share: a baton process that a test
// started with a pidfile in a directory of its own and a JSON log at
// debug level, and how it ended once it has.
type master struct {
	Cmd     *exec.Cmd
	PIDFile string
	Dir     string

	exited chan struct{} // closed once Cmd has been waited for
	err    error         // Cmd.Wait's, once exited is closed
}

// newMaster prepares baton with args (its flags, "--" and the worker
// command) as setup says, adding --pidfile (unless setup.Command starts a
// baton of its own) and --log-format json; start runs it.
func newMaster(t testing.TB, setup Setup, args []string) *master {
	t.Helper()
	baton := setup.Baton
	if baton == "" {
		baton = Build(t).Baton
	}
	dir := t.TempDir()
	m := &master{PIDFile: filepath.Join(dir, "baton.pid"), Dir: dir, exited: make(chan struct{})}
	cmd := []string{baton, "--pidfile", m.PIDFile}
	if setup.Command != nil {
		cmd = setup.Command
	}
	full := append(append(append([]string(nil), cmd...), "--log-format", "json", "--log-level", "debug"), args...)
	full = append(append([]string(nil), setup.Wrap...), full...)
	m.Cmd = exec.Command(full[0], full[1:]...)
	m.Cmd.Env = append(append(os.Environ(), ProcessEnv...), setup.Env...)
	m.Cmd.Dir = dir
	return m
}

// start starts the master; a goroutine runs read, if not nil, and then
// waits for it (read drains the pipes Cmd.Wait would close). The master is
// killed, if still running, when the test ends.
func (m *master) start(t testing.TB, read func()) {
	t.Helper()
	if err := m.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		if read != nil {
			read()
		}
		m.err = m.Cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() { Terminate(m.Cmd.Process, m.exited, syscall.SIGQUIT, 10*time.Second) })
}

// PID is the master's PID.
func (m *master) PID() int { return m.Cmd.Process.Pid }

// Exited reports whether the master has exited.
func (m *master) Exited() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// waitExit waits up to limit for the master to exit, failing the test if
// it is still running then, and returns what Cmd.Wait returned.
func (m *master) waitExit(t testing.TB, limit time.Duration) error {
	t.Helper()
	select {
	case <-m.exited:
	case <-time.After(limit):
		t.Fatalf("baton (pid %d) still running after %s", m.PID(), limit)
	}
	return m.err
}
