package integration_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
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
	harness.WaitGone(t, 10*time.Second, "the workers", pids...)
}

// An upgrade asked for while a reload's new worker is in --min-ready
// probation waits for that probation to end: the old worker is told to
// drain, then the new binary is checked and executed, and `baton upgrade
// --wait` returns with the new image running generation 2; no request
// fails on the way.
func TestUpgradeWaitsForProbation(t *testing.T) {
	bin := harness.Build(t)
	const probation = 2 * time.Second
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--min-ready", probation.String(), "--", bin.TestWorker)
	load := startLoad(t, "http://"+s.b.Addr(t, "http")+"/")
	s.b.Signal(t, syscall.SIGHUP)
	s.b.WaitState(t, 20*time.Second, "generation 2 in probation", func(st upgrader.Status) bool {
		for _, w := range st.Workers {
			if w.Generation == 2 && w.Probation {
				return true
			}
		}
		return false
	})
	asked := time.Now()
	code, stdout, stderr := s.upgrade(t, s.new)
	took := time.Since(asked)
	if code != 0 || !strings.Contains(stdout, "upgrade-new") {
		t.Fatalf("baton upgrade --wait during probation: exit %d, %q %q", code, stdout, stderr)
	}
	// The log says it waited, the probation ran its course (the old
	// worker is told to drain only then), and the upgrade came after.
	steps := []string{"worker_ready", "upgrade_waits", "draining", "upgrade_check", "upgrading", "upgraded"}
	at := map[string]int{}
	var ready, drain time.Time
	for i, e := range s.b.Events() {
		k := e.Kind()
		switch {
		case k == "worker_ready" && e.Int("gen") != 2, k == "draining" && e.Int("gen") != 1:
			continue
		case k == "worker_ready":
			ready, _ = time.Parse(time.RFC3339Nano, e.Str("time"))
		case k == "draining":
			drain, _ = time.Parse(time.RFC3339Nano, e.Str("time"))
		}
		if _, seen := at[k]; !seen {
			at[k] = i
		}
	}
	for i, k := range steps {
		if _, ok := at[k]; !ok {
			t.Fatalf("no %s event in the log", k)
		}
		if i > 0 && at[k] < at[steps[i-1]] {
			t.Fatalf("%s came before %s: want %s", k, steps[i-1], strings.Join(steps, " → "))
		}
	}
	if drain.Sub(ready) < probation {
		t.Fatalf("generation 1 told to drain %s after generation 2 was ready, before the %s probation ended", drain.Sub(ready), probation)
	}
	st := s.b.State(t)
	if st.Generation != 2 || !strings.Contains(st.Version, "upgrade-new") || st.LastReload == nil || !st.LastReload.OK {
		t.Fatalf("after the upgrade: %+v", st)
	}
	for _, w := range st.Workers {
		if w.Generation == 2 && w.Probation {
			t.Fatalf("generation 2 still in probation after the upgrade: %+v", w)
		}
	}
	requireNoFailures(t, load)
	t.Logf("%s(asked during a %s probation; the client waited %s)", stdout, probation, took.Round(time.Millisecond))
	stopCleanly(t, s.b, st.WorkerPID)
}

// As PID 1 of a PID namespace, as in a container, baton upgrades in place
// too: it stays PID 1 with its workers and the orphan it adopted, which
// the new image reaps when it dies; no request fails, and a TERM then
// drains and exits 0.
func TestUpgradeAsPID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare is not installed (util-linux)")
	}
	bin := harness.Build(t)
	old, new := harness.BuildBaton(t, "upgrade-old"), harness.BuildBaton(t, "upgrade-new")
	path := filepath.Join(t.TempDir(), "bin", "baton")
	harness.Install(t, old, path)
	b := harness.StartWith(t, harness.Setup{Baton: path, Wrap: []string{unshare, "--pid", "--fork", "--mount-proc", "--kill-child"}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker, "-orphan")
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 1 })
	url := "http://" + b.Addr(t, "http") + "/"
	master := harness.WaitProc(t, 10*time.Second, "baton running under unshare", func(p harness.Proc) bool {
		return p.PPID == b.PID() && p.Comm == "baton"
	})
	orphan := harness.WaitProc(t, 10*time.Second, "the orphaned sleep adopted by baton", func(p harness.Proc) bool {
		return p.PPID == master.PID && p.Comm == "sleep"
	})
	// The pidfile names PID 1, the namespace's number: from this side the
	// control socket is the way in.
	ctl := control.DefaultPath(b.PIDFile)
	status := func() upgrader.Status {
		t.Helper()
		resp, _, err := control.Ask(ctl, control.Request{Command: "status"}, 10*time.Second)
		if err != nil || resp.Status == nil {
			t.Fatalf("status over %s: %v %s", ctl, err, resp.Error)
		}
		return *resp.Status
	}
	before := status()
	load := startLoad(t, url)
	harness.Install(t, new, path)
	code, stdout, stderr := harness.RunProgram(t, 40*time.Second, old, "upgrade", "--wait", "--control", ctl)
	if code != 0 || !strings.Contains(stdout, "upgrade-new") {
		t.Fatalf("baton upgrade --wait of PID 1: exit %d, %q %q", code, stdout, stderr)
	}
	t.Log(strings.TrimSpace(stdout))
	after := status()
	if after.PID != 1 || !strings.Contains(after.Version, "upgrade-new") ||
		fmt.Sprint(workerPIDs(after)) != fmt.Sprint(workerPIDs(before)) {
		t.Fatalf("after the upgrade: %+v\nbefore: %+v", after, before)
	}
	if p, ok := harness.ReadProc(master.PID); !ok || p.PPID != b.PID() || p.Comm != "baton" {
		t.Fatalf("after the upgrade pid %d is %+v, want baton, unshare's child", master.PID, p)
	}
	requireNoFailures(t, load)

	// The orphan adopted before the upgrade is the new image's to reap.
	upgradedAt := -1
	for i, e := range b.Events() {
		if e.Kind() == "upgraded" {
			upgradedAt = i
		}
	}
	if upgradedAt < 0 {
		t.Fatal("no upgraded event in the log")
	}
	syscall.Kill(orphan.PID, syscall.SIGKILL)
	harness.Eventually(t, 10*time.Second, "the orphan reaped by the new image", func() bool {
		for i, e := range b.Events() {
			if i > upgradedAt && e.Kind() == "orphan_reaped" {
				return true
			}
		}
		return false
	})
	requireNoZombies(t, master.PID)

	slow := b.InFlight(t, url, 1500*time.Millisecond)
	if err := syscall.Kill(master.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("in-flight request during the stop of the upgraded PID 1: %q %v", a.Body, a.Err)
	}
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("unshare (baton as PID 1) exited %d, want 0", code)
	}
}

// batonbench upgrade keeps working: three upgrades between two builds
// under POST load, none failed, the master and its workers kept their
// PIDs. The bound on the time to serve again is loose (CI shares 2 cores
// and builds with -race); docs/upgrading.md states what a build without
// -race measures.
func TestUpgradeBenchmarkRuns(t *testing.T) {
	var rep struct {
		Versions []string
		Upgrades []struct {
			ServingAgainMS float64 `json:"serving_again_ms"`
		}
		Steady, During struct{ Requests int }
		Failed         int
		PIDStable      bool      `json:"pid_stable"`
		SignalWindowMS []float64 `json:"signal_window_ms"`
	}
	_, b := runBatonbench(t, &rep, "upgrade", "-upgrades", "3", "-gap", "200ms", "-rate", "400",
		"-other", harness.BuildBaton(t, "upgrade-new"))
	if len(rep.Upgrades) != 3 || len(rep.SignalWindowMS) != 3 || rep.Steady.Requests == 0 || rep.During.Requests == 0 {
		t.Fatalf("report: %s", b)
	}
	if rep.Failed != 0 || !rep.PIDStable || len(rep.Versions) != 2 || rep.Versions[0] == rep.Versions[1] {
		t.Fatalf("want 0 failed, stable PIDs and the other build running after 3 upgrades: %s", b)
	}
	for i, u := range rep.Upgrades {
		if u.ServingAgainMS <= 0 || u.ServingAgainMS > 1000 {
			t.Errorf("upgrade %d: serving again after %.1f ms, want well under a second", i+1, u.ServingAgainMS)
		}
	}
}
