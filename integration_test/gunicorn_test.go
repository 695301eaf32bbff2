package integration_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// gunicornApp is a WSGI app that names the worker process answering.
const gunicornApp = `import os

def app(environ, start_response):
    body = ("gen=%s pid=%d\n" % (os.environ.get("BATON_GENERATION"), os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`

// Debian's gunicorn speaks both protocols baton offers a worker: it takes
// its sockets from LISTEN_FDS when LISTEN_PID is its own PID, and sends
// READY=1 on NOTIFY_SOCKET once its arbiter has booted. Nothing in it
// knows about baton.
func TestGunicornReloadsUnderLoadFailNoRequest(t *testing.T) {
	gunicorn, err := exec.LookPath("gunicorn")
	if err != nil {
		t.Fatal("gunicorn is not installed (Debian package gunicorn; .ci/run installs it)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(gunicornApp), 0o644); err != nil {
		t.Fatal(err)
	}
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--dir", dir, "--",
		gunicorn, "--workers", "2", "--graceful-timeout", "20", "app:app")
	load := startLoad(t, "http://"+b.Addr(t, "http")+"/")

	const reloads = 5
	arbiter := b.WorkerPID(t, 1)
	for i := 0; i < reloads; i++ {
		before := load.Done()
		end := b.Reload(t, 60*time.Second)
		if end.Msg() != "reload complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
		next := b.WorkerPID(t, end.Int("gen"))
		if next == arbiter || harness.Alive(arbiter) {
			t.Fatalf("reload %d: gunicorn arbiter %d was not replaced (new %d)", i+1, arbiter, next)
		}
		arbiter = next
		harness.Eventually(t, 20*time.Second, "requests flowing after the reload",
			func() bool { return load.Done() >= before+100 })
	}
	sum := requireNoFailures(t, load)
	if len(sum.PIDs) < reloads+1 {
		t.Errorf("answers came from %d gunicorn worker pids, want at least %d", len(sum.PIDs), reloads+1)
	}
	requireNoZombies(t, b.PID())
}
