package integration_test

import (
	"fmt"
	"testing"

	"github.com/baton-sh/baton/internal/harness"
)

// An app built on github.com/fvbock/endless or github.com/facebookgo/grace
// signals its parent with SIGTERM once it serves. Under --protocol endless
// or grace that SIGTERM reaches baton's per-generation parent stub and
// means "ready": 5 reloads under load lose no request, each brings a new
// worker PID, and the master lives on with its PID unchanged.
func testRestarter(t *testing.T, protocol, pkg string) {
	bin := harness.BuildProgram(t, pkg)
	addr := freePort(t)
	b := harness.Start(t, "--protocol", protocol, "--listen", "http=tcp://"+addr, "--", bin, "-addr", addr)
	master := b.PID()
	last := reloadsUnderLoad(t, b, 5)
	if b.Exited() || b.PID() != master {
		t.Fatal("the master did not survive the app's SIGTERMs to its parent")
	}
	// The app's parent, which its SIGTERM reaches, is the generation's
	// main process (the stub), never the master.
	var app int
	fmt.Sscanf(get(t, "http://"+addr+"/")[len(protocol)+1:], "gen=%d pid=%d", new(int), &app)
	if p, ok := harness.ReadProc(app); !ok || p.PPID != last || p.PPID == master {
		t.Fatalf("app %d has parent %d, want the stub %d", app, p.PPID, last)
	}
	stopCleanly(t, b, last)
	if harness.Alive(app) {
		t.Fatalf("app %d outlived the master", app)
	}
}

func TestEndlessAppUnderBaton(t *testing.T) { testRestarter(t, "endless", "./cmd/endlessworker") }

func TestGraceAppUnderBaton(t *testing.T) { testRestarter(t, "grace", "./cmd/graceworker") }
