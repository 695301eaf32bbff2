package integration_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// allServing waits until n workers of one generation serve and nothing
// else runs.
func allServing(t *testing.T, s *upgradeStory, n int) upgrader.Status {
	t.Helper()
	return s.b.WaitState(t, 30*time.Second, fmt.Sprintf("%d workers serving", n), func(st upgrader.Status) bool {
		if len(st.Workers) != n {
			return false
		}
		for _, w := range st.Workers {
			if w.State != "serving" || w.Generation != st.Generation {
				return false
			}
		}
		return true
	})
}

// An upgrade asked for while things move (a --max-surge 1 rollout of 4
// workers, a scale, a rollback) waits for the master to be quiet, then
// carries on: all slots serve afterwards and no request fails.
func TestUpgradeDuringMovingWorkers(t *testing.T) {
	bin := harness.Build(t)
	crash := filepath.Join(t.TempDir(), "crash")
	for _, tc := range []struct {
		name  string
		extra []string
		move  func(t *testing.T, s *upgradeStory)
		want  int
	}{
		{"rollout", []string{"--max-surge", "1"}, func(t *testing.T, s *upgradeStory) { s.b.Signal(t, syscall.SIGHUP) }, 4},
		{"scale", nil, func(t *testing.T, s *upgradeStory) {
			go harness.RunProgram(t, 40*time.Second, s.old, "scale", "6", "--pidfile", s.b.PIDFile)
		}, 6},
		{"rollback", []string{"--max-surge", "1", "--min-ready", "1s"}, func(t *testing.T, s *upgradeStory) {
			// The new release crashes on probation: the rollout moves back.
			harness.InstallBytes(t, nil, crash)
			s.b.Signal(t, syscall.SIGHUP)
		}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--listen", "http=tcp://127.0.0.1:0", "--workers", "4"}, tc.extra...)
			args = append(args, "--", bin.TestWorker, "-ready-after", "200ms")
			if tc.name == "rollback" {
				args = append(args, "-crash-after", "300ms", "-crash-if-exists", crash)
			}
			s := startUpgradable(t, args...)
			load := startLoad(t, "http://"+s.b.Addr(t, "http")+"/")
			tc.move(t, s)
			if code, stdout, stderr := s.upgrade(t, s.new); code != 0 {
				t.Fatalf("upgrade: exit %d %q %q", code, stdout, stderr)
			}
			os.Remove(crash)
			st := allServing(t, s, tc.want)
			time.Sleep(300 * time.Millisecond) // traffic after it
			requireNoFailures(t, load)
			if !strings.Contains(st.Version, "upgrade-new") {
				t.Fatalf("after the upgrade: %+v", st)
			}
			stopCleanly(t, s.b, st.WorkerPID)
		})
	}
}

// Two `baton upgrade --wait` at once: one upgrade, both told of it.
func TestTwoUpgradesAtOnce(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--", bin.TestWorker)
	harness.Install(t, s.new, s.path)
	type out struct {
		code           int
		stdout, stderr string
	}
	outs := make(chan out, 2)
	for range 2 {
		go func() {
			code, stdout, stderr := harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--wait", "--pidfile", s.b.PIDFile)
			outs <- out{code, stdout, stderr}
		}()
	}
	for range 2 {
		if o := <-outs; o.code != 0 || !strings.Contains(o.stdout, "upgrade-new") {
			t.Errorf("baton upgrade --wait: exit %d %q %q", o.code, o.stdout, o.stderr)
		}
	}
	if n := len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" })); n != 1 {
		t.Fatalf("%d upgraded events, want 1", n)
	}
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}

// An upgrade, a HUP and a TERM arriving together: the stop is never lost
// and nothing the master started is left. The master exits 0, or, for a
// TERM that came in the few milliseconds of the exec itself, dies of it
// while its keeper drains the workers (docs/upgrading.md, Limits).
func TestUpgradeHUPAndTERMTogether(t *testing.T) {
	bin := harness.Build(t)
	for i := range 6 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--drain-timeout", "5s", "--", bin.TestWorker)
			pids := workerPIDs(s.b.State(t))
			harness.Install(t, s.new, s.path)
			go harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--pidfile", s.b.PIDFile)
			s.b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "upgrade_check" })
			time.Sleep(time.Duration(i) * 3 * time.Millisecond) // spread over the check and the exec
			s.b.Signal(t, syscall.SIGHUP)
			s.b.Signal(t, syscall.SIGTERM)
			code := s.b.Wait(t, 30*time.Second)
			inExec := len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgrading" })) == 1 &&
				len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" || e.Kind() == "upgrade_failed" })) == 0
			t.Logf("exit %d; TERM during the exec: %v", code, inExec)
			if code != 0 && !(code == -1 && inExec) {
				t.Fatalf("baton exited %d after upgrade+HUP+TERM, want 0", code)
			}
			for _, st := range s.b.Find(func(e harness.Event) bool { return e.Kind() == "worker_started" }) {
				pids = append(pids, st.Int("pid"))
			}
			harness.WaitGone(t, 10*time.Second, "every worker", pids...)
		})
	}
}

// The master SIGKILLed just before its exec, and just after it: nothing
// it started is left running.
func TestUpgradeKilledAroundTheExec(t *testing.T) {
	bin := harness.Build(t)
	for _, at := range []string{"upgrading", "upgraded"} {
		t.Run(at, func(t *testing.T) {
			s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--drain-timeout", "2s", "--", bin.TestWorker)
			pids := workerPIDs(s.b.State(t))
			keeper := harness.WaitProc(t, 10*time.Second, "the keeper", func(p harness.Proc) bool {
				return p.PPID == s.b.PID() && p.Comm == "baton-keeper"
			})
			pids = append(pids, keeper.PID)
			harness.Install(t, s.new, s.path)
			go harness.RunProgram(t, 40*time.Second, s.old, "upgrade", "--pidfile", s.b.PIDFile)
			s.b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == at })
			s.b.Signal(t, syscall.SIGKILL)
			s.b.Wait(t, 10*time.Second)
			harness.WaitGone(t, 10*time.Second, "the workers and the keeper", pids...)
		})
	}
}

// Twenty upgrades back and forth with 4 workers logging their output and
// the admin endpoint: the master's descriptors, private memory and
// threads stay flat, the counters of /metrics go on, and output logged
// by the workers still comes through; it still reloads and stops cleanly.
func TestUpgradeTwentyTimesWithOutputAndAdmin(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "4", "--worker-output", "log",
		"--admin", "127.0.0.1:0", "--", bin.TestWorker)
	admin := "http://" + s.b.Find(func(e harness.Event) bool { return e.Kind() == "admin_listening" })[0].Str("addr")
	url := "http://" + s.b.Addr(t, "http") + "/"
	if code, _, errOut := s.b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload: %d %s", code, errOut)
	}
	before := metrics(t, admin)
	load := startLoad(t, url)
	pid := s.b.PID()
	var fds, anon, threads []int
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
			threads = append(threads, soakStatusKB(t, pid, "Threads"))
		}
	}
	requireNoFailures(t, load)
	t.Logf("after 2 and 20 upgrades: %v open fds, RssAnon %v kB, %v threads", fds, anon, threads)
	if fds[1] > fds[0] || anon[1] > anon[0]+2048 || threads[1] > threads[0]+2 {
		t.Fatalf("after 2 and 20 upgrades: %v open fds (%s), RssAnon %v kB, %v threads: not flat", fds, soakFDList(pid), anon, threads)
	}
	after := metrics(t, admin)
	for name, v := range before {
		if strings.HasPrefix(name, "baton_reloads_total") && after[name] != v {
			t.Errorf("%s: %s before the upgrades, %s after", name, v, after[name])
		}
	}
	if n := len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" })); n != 20 {
		t.Fatalf("%d upgraded events, want 20", n)
	}
	seen := len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "worker_output" }))
	if a := <-s.b.InFlight(t, url, 100*time.Millisecond); a.Err != nil {
		t.Fatal(a.Err)
	}
	harness.Eventually(t, 10*time.Second, "the worker's output logged after the upgrades", func() bool {
		return len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "worker_output" })) > seen
	})
	if code, _, errOut := s.b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload after 20 upgrades: %d %s", code, errOut)
	}
	stopCleanly(t, s.b, s.b.State(t).WorkerPID)
}

// The keeper stopped (SIGSTOP) through upgrades and reloads: the master
// upgrades and serves regardless, and once the keeper runs again it
// still stops every worker when the master is killed.
func TestUpgradeWithTheKeeperStopped(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--workers", "2", "--drain-timeout", "2s", "--", bin.TestWorker)
	keeper := harness.WaitProc(t, 10*time.Second, "the keeper", func(p harness.Proc) bool {
		return p.PPID == s.b.PID() && p.Comm == "baton-keeper"
	})
	syscall.Kill(keeper.PID, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(keeper.PID, syscall.SIGKILL) })
	load := startLoad(t, "http://"+s.b.Addr(t, "http")+"/")
	for i, build := range []string{s.new, s.old, s.new} {
		if code, stdout, stderr := s.upgrade(t, build); code != 0 {
			t.Fatalf("upgrade %d with the keeper stopped: exit %d %q %q", i+1, code, stdout, stderr)
		}
		if code, _, errOut := s.b.ReloadWait(t, 30*time.Second); code != 0 {
			t.Fatalf("reload %d with the keeper stopped: %d %s", i+1, code, errOut)
		}
	}
	requireNoFailures(t, load)
	syscall.Kill(keeper.PID, syscall.SIGCONT)
	st := allServing(t, s, 2)
	pids := workerPIDs(st)
	// The keeper may have been replaced meanwhile: whichever runs now.
	for _, p := range harness.ProcsWhere(func(p harness.Proc) bool { return p.PPID == s.b.PID() && p.Comm == "baton-keeper" }) {
		pids = append(pids, p.PID)
	}
	s.b.Signal(t, syscall.SIGKILL)
	s.b.Wait(t, 10*time.Second)
	harness.WaitGone(t, 15*time.Second, "the workers and the keeper", pids...)
}
