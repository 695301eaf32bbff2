package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// wrapper is a new "baton" that is a script: in the check run it does
// check, otherwise it executes the build given.
func wrapper(t *testing.T, check, build string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "baton-wrapper")
	harness.InstallBytes(t, []byte(fmt.Sprintf("#!/bin/sh\nif [ -n \"$BATON_UPGRADE_CHECK\" ]; then\n%s\nfi\nexec %s \"$@\"\n", check, build)), p)
	return p
}

// A new binary whose check run says ok but leaves a process of another
// session holding its output: the check is still bounded by its 10s, the
// upgrade is refused in one line, and the master reloads afterwards.
func TestUpgradeCheckOutputHeldOpen(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	held := filepath.Join(t.TempDir(), "held.pid")
	t.Cleanup(func() {
		if b, err := os.ReadFile(held); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	p := wrapper(t, fmt.Sprintf("setsid sh -c 'echo $$ > %[1]s.tmp; mv %[1]s.tmp %[1]s; exec sleep 600' &\nwhile [ ! -s %[1]s ]; do sleep 0.01; done\necho \"baton upgrade check ok: held\"\nexit 0", held), s.new)
	harness.Install(t, p, s.path)
	start := time.Now()
	code, _, stderr := harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--wait", "--timeout", "30s", "--pidfile", s.b.PIDFile)
	took := time.Since(start)
	t.Logf("baton upgrade: exit %d after %s: %s", code, took.Round(time.Millisecond), stderr)
	if code != 1 || !strings.Contains(stderr, "upgrade refused") || took > 15*time.Second {
		t.Fatalf("exit %d after %s, %q: want a refusal within the check's 10s", code, took, stderr)
	}
	if code, _, errOut := s.b.ReloadWait(t, 20*time.Second); code != 0 {
		t.Fatalf("reload after the refused upgrade: %d %s", code, errOut)
	}
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}

// A worker's --max-age counts from when it began to serve, across an
// upgrade too: it is replaced on its old schedule, not a full --max-age
// after the upgrade.
func TestUpgradeKeepsMaxAge(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--max-age", "6s", "--", bin.TestWorker)
	served := s.b.State(t)
	time.Sleep(3 * time.Second) // half its age
	if code, _, stderr := s.upgrade(t, s.new); code != 0 {
		t.Fatalf("upgrade: %d %q", code, stderr)
	}
	// Due 5.7s to 6.3s after it served; a fresh count would be 3s later.
	e := s.b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Str("trigger") == "age" })
	at, _ := time.Parse(time.RFC3339Nano, e.Str("time"))
	readyAt := *served.Workers[0].ReadySince
	if age := at.Sub(readyAt); age > 7500*time.Millisecond {
		t.Fatalf("replaced for its age %s after it served: the upgrade restarted the count", age.Round(time.Millisecond))
	}
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}
