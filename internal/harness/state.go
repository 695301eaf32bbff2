package harness

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/baton-sh/baton/upgrader"
)

// State asks the running master for its status (baton status --json), so
// tests read state the way an operator does rather than from log text.
func (b *Baton) State(t testing.TB) upgrader.Status {
	t.Helper()
	st, err := b.state(t)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (b *Baton) state(t testing.TB) (upgrader.Status, error) {
	var st upgrader.Status
	code, out, errOut := Run(t, 15*time.Second, "status", "--json", "--pidfile", b.PIDFile)
	if code != 0 {
		return st, fmt.Errorf("baton status exited %d: %s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("baton status --json: %v\n%s", err, out)
	}
	return st, nil
}

// WaitState polls the master's status until cond holds, for up to d.
func (b *Baton) WaitState(t testing.TB, d time.Duration, what string, cond func(upgrader.Status) bool) upgrader.Status {
	t.Helper()
	var st upgrader.Status
	Eventually(t, d, what, func() bool {
		// Until the master has its control socket, status fails: not yet.
		var err error
		st, err = b.state(t)
		return err == nil && cond(st)
	})
	return st
}

// ReloadWait runs baton reload --wait and returns its exit code and output.
func (b *Baton) ReloadWait(t testing.TB, d time.Duration) (code int, stdout, stderr string) {
	t.Helper()
	return Run(t, d, "reload", "--wait", "--pidfile", b.PIDFile)
}
