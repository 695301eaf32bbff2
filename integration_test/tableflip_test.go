package integration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// An app built on github.com/cloudflare/tableflip, unmodified, runs as a
// baton worker with --protocol tableflip: its upg.Listen gets baton's
// socket, its upg.Ready is the readiness signal, and its drain signal
// (TERM, on which it calls upg.Stop) lets it finish its requests. Its PID
// no longer changes at every upgrade: baton's is the one to watch.
func TestTableflipAppUnderBaton(t *testing.T) {
	app := harness.BuildProgram(t, "./examples/tableflip")
	addr := freePort(t)
	b := harness.Start(t, "--protocol", "tableflip", "--listen", "http=tcp://"+addr, "--", app, "-addr", addr)
	load := startLoad(t, "http://"+addr+"/")

	pid := b.WorkerPID(t, 1)
	for i := 0; i < 5; i++ {
		before := load.Done()
		end := b.Reload(t, 20*time.Second)
		if end.Msg() != "reload complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
		next := b.WorkerPID(t, end.Int("gen"))
		if next == pid || harness.Alive(pid) {
			t.Fatalf("reload %d: tableflip app %d not replaced by %d", i+1, pid, next)
		}
		t.Logf("reload %d took %s", i+1, end.Str("took"))
		pid = next
		harness.Eventually(t, 10*time.Second, "requests flowing after the reload",
			func() bool { return load.Done() >= before+100 })
	}
	sum := requireNoFailures(t, load)
	if len(sum.PIDs) != 6 {
		t.Errorf("answers from %d app pids, want 6 (one per generation)", len(sum.PIDs))
	}
	if strings.Contains(b.Output(), "bind") {
		t.Errorf("the app bound a socket itself instead of taking baton's:\n%s", b.Output())
	}
	requireNoZombies(t, b.PID())
}
