package integration_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
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
	// POSTs on new connections, which no client resends, prove the
	// handoff loses nothing. The keep-alive loops send GETs: these
	// libraries' own drain turns keep-alives off at once, which closes an
	// idle keep-alive connection under a request the client has just sent
	// (measured with POSTs there: 6 of about 1 400 over 5 reloads, EOF or
	// reset). That is the app's drain, not the handoff; an app that drains
	// with listener.HTTPDrainer loses none.
	url := "http://" + addr + "/"
	post, err := loadgen.Start(loadgen.Config{URL: url, NewConns: 4, PostBody: []byte("x"), MaxDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { post.Stop() })
	keepAlive, err := loadgen.Start(loadgen.Config{URL: url, KeepAlive: 4, MaxDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keepAlive.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return post.Done() >= 100 && keepAlive.Done() >= 100 })
	last := reloadsWithLoad(t, b, 5, post)
	requireNoFailures(t, keepAlive)
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
