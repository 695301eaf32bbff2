package integration_test

import (
	"fmt"
	"net/http"
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
	t.Parallel() // it waits out the check's timeout, idle
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

// The pidfile, then the control socket's file, removed while baton runs
// (a tmp cleaner, an operator's rm): an upgrade still carries everything
// over, found through the control socket, then the admin endpoint; the
// master and its worker carry on.
func TestUpgradeWithItsFilesRemoved(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--admin", "127.0.0.1:0", "--admin-lifecycle", "--", bin.TestWorker)
	before := s.b.State(t)
	ctl := filepath.Join(filepath.Dir(s.b.PIDFile), "baton.control.sock")
	if err := os.Remove(s.b.PIDFile); err != nil {
		t.Fatal(err)
	}
	harness.Install(t, s.new, s.path)
	code, stdout, stderr := harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--wait", "--control", ctl)
	if code != 0 || s.b.Exited() {
		t.Fatalf("upgrade without its pidfile: exit %d %q %q; master exited: %v", code, stdout, stderr, s.b.Exited())
	}
	s.b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "pidfile_lost" })

	if err := os.Remove(ctl); err != nil {
		t.Fatal(err)
	}
	harness.Install(t, s.old, s.path)
	admin := s.b.Find(func(e harness.Event) bool { return e.Kind() == "admin_listening" })[0].Str("addr")
	resp, err := http.Post("http://"+admin+"/-/upgrade", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	harness.Eventually(t, 20*time.Second, "two upgrades done", func() bool {
		return len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" })) == 2 || s.b.Exited()
	})
	if s.b.Exited() || !harness.Alive(before.WorkerPID) {
		t.Fatalf("after the upgrades: master exited %v, worker %d alive %v", s.b.Exited(), before.WorkerPID, harness.Alive(before.WorkerPID))
	}
	if body := get(t, "http://"+s.b.Addr(t, "http")+"/"); !strings.Contains(body, "pid="+strconv.Itoa(before.WorkerPID)) {
		t.Fatalf("answered by %q", body)
	}
}

// An --env-file gone since the last reload: the new image could not
// start with it, so the check refuses the upgrade, and the master carries
// on with its worker instead of ending with it.
func TestUpgradeRefusedForAMissingEnvFile(t *testing.T) {
	bin := harness.Build(t)
	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(envFile, []byte("GREETING=hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--env-file", envFile, "--", bin.TestWorker)
	before := s.b.State(t)
	if err := os.Remove(envFile); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := s.upgrade(t, s.new)
	if code != 1 || !strings.Contains(stderr, "upgrade refused") || !strings.Contains(stderr, "app.env") {
		t.Fatalf("exit %d, %q: want a refusal naming the env file", code, stderr)
	}
	if after := s.b.State(t); after.PID != before.PID || after.WorkerPID != before.WorkerPID || after.Upgraded != nil {
		t.Fatalf("after the refusal: %+v", after)
	}
	stopCleanly(t, s.b, before.WorkerPID)
}

// The master SIGKILLed while the new binary's check runs: nothing of the
// check is left behind, what it started included, and the keeper stops
// the worker.
func TestUpgradeKilledDuringTheCheck(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "2s", "--", bin.TestWorker)
	worker := s.b.State(t).WorkerPID
	child := filepath.Join(t.TempDir(), "child.pid")
	p := wrapper(t, fmt.Sprintf("sleep 600 &\necho $! > %[1]s.tmp; mv %[1]s.tmp %[1]s\nwait\nexit 0", child), s.new)
	harness.Install(t, p, s.path)
	go harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--pidfile", s.b.PIDFile)
	var pid int
	harness.Eventually(t, 10*time.Second, "the check's child started", func() bool {
		b, err := os.ReadFile(child)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	s.b.Signal(t, syscall.SIGKILL)
	s.b.Wait(t, 10*time.Second)
	harness.WaitGone(t, 10*time.Second, "the check's child and the worker", pid, worker)
}

// A deploy that puts another file at the binary's path after its check
// ran, before the exec: the master executes the binary it checked, never
// the unchecked one; one rewritten in place since its check is refused,
// and the master carries on.
func TestUpgradeRunsTheBinaryItChecked(t *testing.T) {
	bin := harness.Build(t)
	broken := filepath.Join(t.TempDir(), "broken")
	harness.InstallBytes(t, []byte("#!/bin/sh\necho 'an unchecked binary ran' >&2\nexit 3\n"), broken)
	for _, tc := range []struct {
		name, swap string
		upgraded   bool
	}{
		{"replaced", "cp %[1]s %[2]s.swap && mv %[2]s.swap %[2]s", true},
		{"rewritten in place", "cat %[1]s > %[2]s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
			before := s.b.State(t)
			// The check says ok, then the file at the path changes.
			p := wrapper(t, fmt.Sprintf("echo \"baton upgrade check ok: checked\"\n"+tc.swap+"\nexit 0", broken, s.path), s.new)
			harness.Install(t, p, s.path)
			code, stdout, stderr := harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--wait", "--pidfile", s.b.PIDFile)
			t.Logf("baton upgrade: exit %d %q %q", code, strings.TrimSpace(stdout), strings.TrimSpace(stderr))
			if s.b.Exited() {
				t.Fatalf("the master ended: it executed the binary put there after the check")
			}
			after := s.b.State(t)
			if after.PID != before.PID || after.WorkerPID != before.WorkerPID {
				t.Fatalf("after the upgrade: %+v\nbefore: %+v", after, before)
			}
			if tc.upgraded {
				if code != 0 || !strings.Contains(after.Version, "upgrade-new") {
					t.Fatalf("exit %d, version %q: want the checked binary running", code, after.Version)
				}
				// It keeps its name, and the binary it was executed from
				// is not kept open.
				if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", after.PID)); strings.TrimSpace(string(comm)) != "baton" {
					t.Fatalf("the upgraded master is called %q, want baton", comm)
				}
				fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", after.PID))
				for _, fd := range fds {
					if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", after.PID, fd.Name())); strings.HasPrefix(l, filepath.Dir(s.path)) {
						t.Fatalf("the upgraded master still holds fd %s, %s", fd.Name(), l)
					}
				}
			} else if code != 1 || !strings.Contains(stderr, "written to since its check") || after.Upgraded != nil {
				t.Fatalf("exit %d %q, upgraded %v: want a refusal saying the binary changed", code, stderr, after.Upgraded)
			}
			if body := get(t, "http://"+s.b.Addr(t, "http")+"/"); !strings.Contains(body, "pid="+strconv.Itoa(before.WorkerPID)) {
				t.Fatalf("answered by %q", body)
			}
			stopCleanly(t, s.b, before.WorkerPID)
		})
	}
}
