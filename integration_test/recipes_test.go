package integration_test

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
)

// The README's recipes for servers people run, each with the real
// runtime: three reloads under POST load with 0 failed requests, a new
// worker PID at each, the master's PID unchanged, and a clean stop.

// recipeReady is how baton learns that a server which cannot send
// READY=1 is ready.
var recipeReady = []string{"--ready", "delay=1s"}

// recipeNeed finds a runtime's command, or skips the test saying which
// Debian package provides it.
func recipeNeed(t *testing.T, command, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(command)
	if err != nil {
		t.Skipf("%s is not installed (Debian package %s)", command, pkg)
	}
	return p
}

// recipeReloads reloads b n times under POST load: a client never resends
// a POST, so every request a draining server drops counts.
func recipeReloads(t *testing.T, b *harness.Baton, n int) int {
	t.Helper()
	load, err := loadgen.Start(loadgen.Config{
		URL: "http://" + b.Addr(t, "http") + "/", NewConns: 4, KeepAlive: 4,
		PostBody: []byte("recipe"), MaxDuration: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	return reloadsWithLoad(t, b, n, load)
}

// recipeStart runs baton over command on a free loopback port.
func recipeStart(t *testing.T, flags []string, command ...string) *harness.Baton {
	t.Helper()
	args := append([]string{"--listen", "http=tcp://127.0.0.1:0"}, flags...)
	return harness.Start(t, append(append(args, "--"), command...)...)
}

func TestRecipeNode(t *testing.T) {
	node := recipeNeed(t, "node", "nodejs")
	// README: baton --listen http=tcp://127.0.0.1:3000 --ready accepting -- node server.js
	b := recipeStart(t, recipeReady, node, filepath.Join(harness.ModuleRoot(), "examples", "node", "server.js"))
	stopCleanly(t, b, recipeReloads(t, b, 3))
}

func TestRecipeUvicorn(t *testing.T) {
	recipeNeed(t, "uvicorn", "uvicorn")
	python := ecoPython3(t)
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in examples/
	// README: baton --listen http=tcp://127.0.0.1:8000 --ready accepting --dir examples/uvicorn -- python3 serve.py
	flags := append([]string{"--dir", filepath.Join(harness.ModuleRoot(), "examples", "uvicorn")}, recipeReady...)
	b := recipeStart(t, flags, python, "serve.py")
	stopCleanly(t, b, recipeReloads(t, b, 3))
}
