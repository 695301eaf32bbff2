package integration_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// Faults that meet while several workers roll or heal: a worker lost in
// the middle of a reload that then fails, a scale-down during a
// self-healing replacement. Each story keeps POST load on the service and
// ends with a stop that leaves nothing running.

// startFleet starts baton over `sh -c script testworker args…` with the
// given flags, so the script can pick what each worker does from its
// BATON_* variables before it execs the test worker (same PID).
func startFleet(t *testing.T, batonFlags []string, script string, args ...string) (*harness.Baton, string) {
	t.Helper()
	bin := harness.Build(t)
	all := append([]string{"--listen", "http=tcp://127.0.0.1:0"}, batonFlags...)
	all = append(append(all, "--", "sh", "-c", script, bin.TestWorker), args...)
	b := harness.Start(t, all...)
	return b, "http://" + b.Addr(t, "http")
}

// stopAndRequireNothingLeft stops b with TERM, requires exit 0, and that
// no worker it ever started still runs.
func stopAndRequireNothingLeft(t *testing.T, b *harness.Baton) {
	t.Helper()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
	for _, e := range b.Find(isEvent("worker_started")) {
		if pid := e.Int("pid"); harness.Alive(pid) {
			t.Fatalf("worker %d (generation %d, slot %d) outlived the master", pid, e.Int("gen"), e.Int("index"))
		}
	}
}

// A reload of two workers whose new release never becomes ready fails.
// If slot 0's old worker exits while that reload is under way, its slot
// waits for the new worker, which fails too: the slot is then restarted
// from the old release like after a crash, so both slots serve again
// instead of one for good.
func TestWorkersSlotLostDuringAFailedReloadServesAgain(t *testing.T) {
	b, url := startFleet(t, []string{"--workers", "2"},
		`[ "$BATON_GENERATION" = 2 ] && { sleep 2; exit 1; }; exec "$0"`)
	load := startLoad(t, url+"/")
	old := bySlot(t, fleetSettled(t, b, 2, 1))

	b.Signal(t, syscall.SIGHUP)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool {
		return e.Kind() == "worker_started" && e.Int("gen") == 2 && e.Int("index") == 1
	})
	// Slot 0's old worker goes away on its own, cleanly: it drains.
	if err := syscall.Kill(old[0], syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	end := b.WaitFor(t, 15*time.Second, reloadEnded)
	if end.Kind() != "reload_failed" {
		t.Fatalf("reload ended with %v, want it failed", end)
	}
	b.WaitState(t, 10*time.Second, "both slots serving generation 1 after the failed reload",
		func(s upgrader.Status) bool { return servingOf(s, 1) == 2 })
	st := fleetSettled(t, b, 2, 1)
	if now := bySlot(t, st); now[1] != old[1] || now[0] == old[0] {
		t.Fatalf("workers %v, were %v: want slot 0 restarted and slot 1 left alone", now, old)
	}
	requireNoFailures(t, load)
	stopAndRequireNothingLeft(t, b)
}

// Three workers under --watchdog: slot 2 falls silent and is being
// replaced (its replacement takes 6s to start) when slot 0 falls silent
// too and waits its turn. SIGTTOU removes slot 2, replacement and all:
// slot 0's replacement must start then, not wait for one that no longer
// exists.
func TestWorkersScaleDownDuringAReplacementStartsTheNextOne(t *testing.T) {
	silent := flagFile(t, "silent")
	b, url := startFleet(t, []string{"--workers", "3", "--watchdog", "1s", "--ready-timeout", "30s"},
		`case "$BATON_WORKER_INDEX" in
2) exec "$0" -ready-after 6s -watchdog-stop-after 500ms -only-if-exists "$1";;
0) exec "$0" -watchdog-stop-after 8s -only-if-exists "$1";;
*) exec "$0";;
esac`, silent)
	fleetSettled(t, b, 3, 1)
	os.Remove(silent) // the replacements ping
	load := startLoad(t, url+"/")

	first := b.WaitFor(t, 15*time.Second, isEvent("replacing"))
	if first.Int("index") != 2 {
		t.Fatalf("first replacement %v, want slot 2's", first)
	}
	waits := b.WaitFor(t, 15*time.Second, isEvent("replacement_waits"))
	if waits.Int("index") != 0 {
		t.Fatalf("waiting replacement %v, want slot 0's", waits)
	}
	b.Signal(t, syscall.SIGTTOU)
	next := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "replacing" && e.Int("index") == 0 })
	b.WaitFor(t, 15*time.Second, func(e harness.Event) bool {
		return e.Kind() == "reload_complete" && e.Str("trigger") == "watchdog" && e.Int("index") == 0
	})
	waitGone(t, b, next.Int("pid"))
	fleetSettled(t, b, 2, 1)
	requireNoFailures(t, load)
	stopAndRequireNothingLeft(t, b)
}

// servingOf is how many workers of generation gen serve in s.
func servingOf(s upgrader.Status, gen int) int {
	n := 0
	for _, w := range s.Workers {
		if w.State == "serving" && w.Generation == gen {
			n++
		}
	}
	return n
}

// Two workers under --watchdog: slot 0's first worker falls silent, and
// its replacement takes 2s to fail. The silent worker exits meanwhile
// (it drains on a TERM from outside). The slot must serve again: its
// next start is a crash restart, which succeeds.
func TestWorkersSlotWhoseWorkerAndReplacementBothEndServesAgain(t *testing.T) {
	starts := filepath.Join(t.TempDir(), "starts")
	b, url := startFleet(t, []string{"--workers", "2", "--watchdog", "1s"},
		`if [ "$BATON_WORKER_INDEX" = 0 ]; then
  n=$(( $(cat "$1" 2>/dev/null || echo 0) + 1 )); echo $n >"$1"
  case $n in
  1) exec "$0" -watchdog-stop-after 500ms;;
  2) sleep 2; exit 1;;
  esac
fi
exec "$0"`, starts)
	load := startLoad(t, url+"/")
	replacing := b.WaitFor(t, 15*time.Second, isEvent("replacing"))
	if err := syscall.Kill(replacing.Int("pid"), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	b.WaitFor(t, 15*time.Second, func(e harness.Event) bool {
		return e.Kind() == "reload_failed" && e.Str("trigger") == "watchdog"
	})
	st := fleetSettled(t, b, 2, 1)
	if st.Workers[0].Restarts != 1 && st.Workers[1].Restarts != 1 {
		t.Fatalf("workers %+v: want slot 0 restarted once", st.Workers)
	}
	requireNoFailures(t, load)
	stopAndRequireNothingLeft(t, b)
}
