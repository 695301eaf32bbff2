package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// upgradeStory is a baton run from a path of its own, as a package
// manager installs it, so that the path can be given a new build.
type upgradeStory struct {
	b        *harness.Baton
	path     string // the installed baton the master runs
	old, new string // two builds, versions "upgrade-old" and "upgrade-new"
}

func startUpgradable(t *testing.T, args ...string) *upgradeStory {
	t.Helper()
	s := &upgradeStory{old: harness.BuildBaton(t, "upgrade-old"), new: harness.BuildBaton(t, "upgrade-new")}
	s.path = filepath.Join(t.TempDir(), "bin", "baton")
	harness.Install(t, s.old, s.path)
	s.b = harness.StartWith(t, harness.Setup{Baton: s.path}, args...)
	s.b.WaitState(t, 20*time.Second, "every worker serving", func(st upgrader.Status) bool {
		return st.Ready && st.LastReload != nil && st.LastReload.OK
	})
	return s
}

// upgrade installs build and asks for the upgrade with `baton upgrade
// --wait`, run by the old build (the client any version may be).
func (s *upgradeStory) upgrade(t *testing.T, build string) (code int, stdout, stderr string) {
	t.Helper()
	harness.Install(t, build, s.path)
	return harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--wait", "--pidfile", s.b.PIDFile)
}

func workerPIDs(st upgrader.Status) []int {
	var pids []int
	for _, w := range st.Workers {
		pids = append(pids, w.PID)
	}
	return pids
}

// The user's story: a new baton is installed over the running one's
// binary, `baton upgrade --wait` under load: same master PID, same
// workers, the new version reported, nothing failed, and a reload right
// after works.
func TestUpgradeInPlaceUnderLoad(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--", bin.TestWorker)
	url := "http://" + s.b.Addr(t, "http") + "/"
	before := s.b.State(t)
	load := startLoad(t, url)
	time.Sleep(300 * time.Millisecond) // traffic before the upgrade
	start := time.Now()
	code, stdout, stderr := s.upgrade(t, s.new)
	took := time.Since(start)
	if code != 0 || !strings.Contains(stdout, "upgrade-new") {
		t.Fatalf("baton upgrade --wait: exit %d, %q %q", code, stdout, stderr)
	}
	t.Logf("%s(took %s from the client)", stdout, took.Round(time.Millisecond))
	after := s.b.State(t)
	if after.PID != before.PID || fmt.Sprint(workerPIDs(after)) != fmt.Sprint(workerPIDs(before)) ||
		!strings.Contains(after.Version, "upgrade-new") || after.Upgraded == nil || after.Generation != before.Generation {
		t.Fatalf("after the upgrade: %+v\nbefore: %+v", after, before)
	}
	if code, _, errOut := s.b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload after the upgrade: %d %s", code, errOut)
	}
	time.Sleep(300 * time.Millisecond) // traffic after it
	requireNoFailures(t, load)
	if e := s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" }); len(e) != 1 {
		t.Fatalf("%d upgraded events, want 1", len(e))
	}
	requireNoZombies(t, s.b.PID())
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}

// A binary that cannot take over is refused, with the reason, and the
// master carries on as it was.
func TestUpgradeRefusesABrokenBinary(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	good, err := os.ReadFile(s.new)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, tc := range []struct {
		name, want string
		content    []byte
	}{
		{"a script that exits 1", "exited with status 1", []byte("#!/bin/sh\necho no >&2\nexit 1\n")},
		{"a truncated baton", "failed its check", good[:len(good)/3]},
		{"a program that is not baton", "does not speak baton's upgrade check", mustRead(t, "/bin/true")},
		{"another architecture", "exec format error", foreignELF()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(tmp, strings.ReplaceAll(tc.name, " ", "-"))
			harness.InstallBytes(t, tc.content, p)
			before := s.b.State(t)
			code, _, stderr := s.upgrade(t, p)
			if code != 1 || !strings.Contains(stderr, "upgrade refused") || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, %q; want 1 and one line saying %q", code, stderr, tc.want)
			}
			after := s.b.State(t)
			if after.Version != before.Version || after.Upgraded != nil || after.PID != before.PID {
				t.Fatalf("the master changed: %+v", after)
			}
			if body := get(t, "http://"+s.b.Addr(t, "http")+"/"); !strings.Contains(body, "pid="+strconv.Itoa(after.WorkerPID)) {
				t.Fatalf("answered by %q", body)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// foreignELF is the header of an executable for another machine
// (aarch64 on amd64, x86-64 elsewhere): the kernel refuses to run it.
func foreignELF() []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF\x02\x01\x01")
	h[16] = 2 // ET_EXEC
	h[18] = 0xb7
	if runtime.GOARCH == "arm64" {
		h[18] = 0x3e
	}
	return h
}

// Twenty upgrades in a row between two builds: the master's descriptors
// and private memory stay flat, and it still reloads and stops cleanly.
func TestUpgradeTwentyTimes(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--", bin.TestWorker)
	pid := s.b.PID()
	var fds, anon []int
	for i := range 20 {
		build := s.new
		if i%2 == 1 {
			build = s.old
		}
		if code, stdout, stderr := s.upgrade(t, build); code != 0 {
			t.Fatalf("upgrade %d: exit %d %q %q", i+1, code, stdout, stderr)
		}
		if i == 1 || i == 19 {
			fds = append(fds, soakFDs(t, pid))
			anon = append(anon, soakAnonKB(t, pid))
		}
	}
	t.Logf("after 2 and 20 upgrades: %v open fds, RssAnon %v kB", fds, anon)
	if fds[1] != fds[0] || anon[1] > anon[0]+2048 {
		t.Fatalf("after 2 and 20 upgrades: %v open fds, RssAnon %v kB: not flat", fds, anon)
	}
	if code, _, errOut := s.b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload after 20 upgrades: %d %s", code, errOut)
	}
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}

// An upgrade while a generation drains a slow request: the drain carries
// over and the request is answered. HUPs sent all through the upgrade
// never end the master: one caught before the exec is a reload of the new
// image; one in the few milliseconds of the exec itself is missed.
func TestUpgradeDuringADrainAndHUPs(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "20s", "--", bin.TestWorker)
	url := "http://" + s.b.Addr(t, "http") + "/"
	slow := s.b.InFlight(t, url, 3*time.Second)
	s.b.Signal(t, syscall.SIGHUP)
	s.b.WaitState(t, 20*time.Second, "generation 2 serving, 1 draining", func(st upgrader.Status) bool {
		return st.Generation == 2 && len(st.Workers) == 2
	})
	stop := make(chan struct{})
	hups := make(chan int)
	go func() {
		n := 0
		defer func() { hups <- n }()
		s.b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "upgrade_check" })
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				syscall.Kill(s.b.PID(), syscall.SIGHUP)
				n++
			}
		}
	}()
	code, stdout, stderr := s.upgrade(t, s.new)
	close(stop)
	n := <-hups
	if code != 0 {
		t.Fatalf("upgrade: exit %d %q %q", code, stdout, stderr)
	}
	if a := <-slow; a.Err != nil {
		t.Fatalf("the slow request on the draining generation: %v", a.Err)
	}
	// The reloads the HUPs asked for coalesce; the last one ends in the
	// new image.
	st := s.b.WaitState(t, 30*time.Second, "the reloads the HUPs asked for done", func(st upgrader.Status) bool {
		return st.LastReload != nil && st.LastReload.Trigger == "signal" && st.Upgraded != nil &&
			st.LastReload.At.After(*st.Upgraded) && len(st.Workers) == 1
	})
	t.Logf("%d HUPs during the upgrade: generation %d serves, %s", n, st.Generation, st.Version)
	if !strings.Contains(st.Version, "upgrade-new") || s.b.Exited() {
		t.Fatalf("after the upgrade and the HUPs: %+v", st)
	}
	stopCleanly(t, s.b, st.WorkerPID)
}

// After upgrades, a SIGKILLed master still leaves nothing behind: the
// keeper it handed over stops the workers.
func TestUpgradedMasterKilledLeavesNothing(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--drain-timeout", "2s", "--", bin.TestWorker)
	for _, build := range []string{s.new, s.old} {
		if code, _, stderr := s.upgrade(t, build); code != 0 {
			t.Fatalf("upgrade: %d %q", code, stderr)
		}
	}
	pids := workerPIDs(s.b.State(t))
	s.b.Signal(t, syscall.SIGKILL)
	s.b.Wait(t, 10*time.Second)
	harness.Eventually(t, 10*time.Second, "the workers gone", func() bool {
		for _, p := range pids {
			if harness.Alive(p) {
				return false
			}
		}
		return true
	})
}
