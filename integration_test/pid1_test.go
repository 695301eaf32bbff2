package integration_test

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// In a container baton is PID 1: it must adopt and reap the orphans its
// workers leave (a double-forked helper), and on TERM wait for its workers
// to drain before it exits, unlike tini or dumb-init, which exit once they
// have forwarded the signal and so cut the requests still in flight.
func TestBatonAsPID1InAPIDNamespace(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare is not installed (util-linux)")
	}
	bin := harness.Build(t)
	// --kill-child: should unshare die, baton dies with it.
	b := harness.StartWith(t, harness.Setup{Wrap: []string{unshare, "--pid", "--fork", "--mount-proc", "--kill-child"}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker, "-orphan")
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 1 })
	url := "http://" + b.Addr(t, "http")

	// baton's PID on this side of the namespace: unshare's child.
	master := harness.WaitProc(t, 10*time.Second, "baton running under unshare", func(p harness.Proc) bool {
		return p.PPID == b.PID() && p.Comm == "baton"
	})
	// The worker's helper (sh -c "sleep 300 &") was orphaned when sh
	// exited: baton, PID 1 in the namespace, adopted it.
	orphan := harness.WaitProc(t, 10*time.Second, "the orphaned sleep adopted by baton", func(p harness.Proc) bool {
		return p.PPID == master.PID && p.Comm == "sleep"
	})
	// An orphan that dies is reaped by baton, not left defunct.
	syscall.Kill(orphan.PID, syscall.SIGKILL)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "orphan_reaped" })
	requireNoZombies(t, master.PID)

	// TERM with a request in flight: baton waits for the drain.
	slow := b.InFlight(t, url, 1500*time.Millisecond)
	if err := syscall.Kill(master.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("in-flight request during the stop of PID 1: %q %v", a.Body, a.Err)
	}
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("unshare (baton as PID 1) exited %d, want 0", code)
	}
	if harness.Alive(master.PID) {
		t.Fatalf("baton %d still running", master.PID)
	}
}

// Outside a container, --subreaper gives the same adoption: a helper a
// worker leaves behind is baton's child, and is reaped when it dies.
func TestSubreaperAdoptsAndReapsOrphans(t *testing.T) {
	b, _ := startWorker(t, []string{"--subreaper"}, "-orphan")
	orphan := harness.WaitProc(t, 10*time.Second, "the orphaned sleep adopted by baton", func(p harness.Proc) bool {
		return p.PPID == b.PID() && p.Comm == "sleep"
	})
	syscall.Kill(orphan.PID, syscall.SIGKILL)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "orphan_reaped" && e.Int("pid") == orphan.PID })
	requireNoZombies(t, b.PID())
}
