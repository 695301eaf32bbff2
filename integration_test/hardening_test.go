package integration_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// Hardening: each test makes one thing go wrong around a real master, the
// way it goes wrong on real machines (a release directory cleaned up, a
// server that detaches, a socket file deleted, a stopped process, a flood),
// and checks that baton contains it. Each one failed on the engine before
// it was fixed; docs/operations.md says how.

// baton's own binary is deleted under a running master, as when a release
// directory is cleaned up after a deploy. Workers, hooks, the parent stub
// and the keeper all start from the master's own image, which the kernel
// keeps while the master runs: a reload, a crash restart, a hook and a new
// keeper still work, and TERM stops it cleanly.
func TestBatonBinaryDeleted(t *testing.T) {
	bin := harness.Build(t)
	for _, tc := range []struct {
		protocol string
		command  func(t *testing.T, addr string) []string
	}{
		{"systemd", func(t *testing.T, addr string) []string { return []string{bin.TestWorker} }},
		{"endless", func(t *testing.T, addr string) []string {
			return []string{harness.BuildProgram(t, "./cmd/endlessworker"), "-addr", addr}
		}},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			dir := t.TempDir()
			release := filepath.Join(dir, "release")
			self := filepath.Join(release, "baton")
			harness.Install(t, bin.Baton, self)
			hook := filepath.Join(dir, "on-ready")
			hardScript(t, hook, `echo "on-ready $BATON_GENERATION"`)
			addr := freePort(t)
			args := []string{"--protocol", tc.protocol, "--on-ready", hook, "--listen", "http=tcp://" + addr, "--"}
			b := harness.StartWith(t, harness.Setup{Baton: self}, append(args, tc.command(t, addr)...)...)
			b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 1 })
			url := "http://" + addr + "/"

			if err := os.RemoveAll(release); err != nil {
				t.Fatal(err)
			}
			if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", b.PID())); !strings.HasSuffix(target, "(deleted)") {
				t.Fatalf("the master's binary is %q, want it deleted", target)
			}

			if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" || end.Int("gen") != 2 {
				t.Fatalf("reload after baton's binary was deleted: %v", end)
			}
			b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_done" && e.Int("gen") == 2 })

			worker := containOpen(t, b.WorkerPID(t, 2))
			containSignal(t, worker, syscall.SIGKILL)
			b.WaitFor(t, 20*time.Second, func(e harness.Event) bool {
				return e.Kind() == "reload_complete" && e.Str("trigger") == "crash"
			})
			if body := get(t, url); !strings.Contains(body, "gen=2") {
				t.Fatalf("after the crash restart, answered by %q, want generation 2", body)
			}

			first := containKeeper(t, b)
			containSignal(t, first, syscall.SIGKILL)
			b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "keeper_exited" && e.Int("pid") == first.pid })
			if second := containKeeper(t, b); second.pid == first.pid {
				t.Fatalf("no new keeper after keeper %d was killed", first.pid)
			}

			b.Signal(t, syscall.SIGTERM)
			if code := b.Wait(t, 30*time.Second); code != 0 {
				t.Fatalf("baton exited %d after TERM, want 0", code)
			}
		})
	}
}

// A worker that leaves the process group baton started it in (it joins
// another one with setpgid) and ignores the drain signal is still
// SIGKILLed at the drain timeout: through its pidfd, not only through the
// group it no longer belongs to, so the reload completes.
func TestWorkerLeavesItsGroupAndIgnoresTheDrain(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker, "-leave-group", "-ignore-drain")
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "1s", "--", app)
	old := b.WorkerPID(t, 1)
	b.OutputContains(t, 10*time.Second, fmt.Sprintf("left my process group pid=%d", old))
	if p, ok := harness.ReadProc(old); !ok || p.PGID == old {
		t.Fatalf("worker %d: %+v, want it out of its own process group", old, p)
	}

	harness.Deploy(t, app, bin.TestWorker)
	end := b.Reload(t, 15*time.Second)
	if end.Kind() != "reload_complete" || end.Int("gen") != 2 {
		t.Fatalf("want the reload to complete with generation 2, got %v", end)
	}
	t.Logf("the reload took %s (drain timeout 1s)", end.Str("took"))
	exit := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == old })
	if exit.Str("how") != "killed by signal KILL" {
		t.Fatalf("generation 1 ended %q, want killed by signal KILL", exit.Str("how"))
	}
	if harness.Alive(old) {
		t.Fatalf("worker %d still alive", old)
	}
	stopCleanly(t, b, b.WorkerPID(t, 2))
}

// QUIT is a fast stop even while a slow hook runs: the hook is killed,
// no on-stopping hook starts, and baton exits at once.
func TestQuitKillsASlowHook(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "hook.pid")
	onReady := filepath.Join(dir, "on-ready")
	hardScript(t, onReady, "echo $$ > "+pidFile+"\nexec sleep 60")
	onStopping := filepath.Join(dir, "on-stopping")
	hardScript(t, onStopping, "sleep 60")
	b, _ := startWorker(t, []string{"--on-ready", onReady, "--on-stopping", onStopping, "--hook-timeout", "60s"})
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_started" && e.Str("hook") == "on-ready" })
	hook := containOpen(t, hardReadPID(t, pidFile))

	start := time.Now()
	b.Signal(t, syscall.SIGQUIT)
	code := b.Wait(t, 10*time.Second)
	took := time.Since(start)
	t.Logf("baton exited %d %s after QUIT", code, took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Fatalf("baton took %s to exit after QUIT with a hook running, want at most 3s", took)
	}
	if !hook.exited() {
		t.Fatalf("the on-ready hook %d outlived the fast stop", hook.pid)
	}
	if on := b.Find(func(e harness.Event) bool { return e.Kind() == "hook_started" && e.Str("hook") == "on-stopping" }); len(on) > 0 {
		t.Fatalf("a fast stop started the on-stopping hook: %v", on)
	}
}

// An on-ready hook that leaves a child in a session of its own (which
// keeps the hook's output open) ends when its own process exits, not when
// that child closes the output. The child is named as the hook's leftover
// and killed at once, never blamed on the worker.
func TestHookLeavesAChildInItsOwnSession(t *testing.T) {
	dir := t.TempDir()
	childFile := filepath.Join(dir, "child.pid")
	hook := filepath.Join(dir, "on-ready")
	// The hook exits once its child is in a session of its own.
	hardScript(t, hook, `setsid sh -c 'echo $$ > `+childFile+`; exec sleep 300' &`+
		"\nuntil [ -s "+childFile+" ]; do sleep 0.01; done\necho registered")
	b, _ := startWorker(t, []string{"--on-ready", hook, "--hook-timeout", "20s"})
	done := b.WaitFor(t, 25*time.Second, func(e harness.Event) bool {
		return (e.Kind() == "hook_done" || e.Kind() == "hook_failed") && e.Str("hook") == "on-ready"
	})
	if done.Kind() != "hook_done" || done.Str("output") != "registered" {
		t.Fatalf("the hook's end: %v", done)
	}
	took := faultTook(t, done)
	t.Logf("the hook took %s", took)
	if took > 2*time.Second {
		t.Fatalf("the hook took %s: it ended when its child closed the output, not when it exited", took)
	}
	child := hardReadPID(t, childFile)
	killed := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "stray_killed" && e.Int("pid") == child })
	if hook, _ := killed["hook"].(bool); !hook {
		t.Fatalf("the hook's child was killed as a worker's: %v", killed)
	}
	harness.Eventually(t, 5*time.Second, "the hook's child gone", func() bool { return !harness.Alive(child) })
	if d := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_daemonized" }); len(d) > 0 {
		t.Fatalf("the hook's child was reported as the worker daemonizing: %v", d)
	}
	stopCleanly(t, b, b.WorkerPID(t, 1))
}

// The master is SIGKILLed while an on-ready hook runs with a child in its
// process group: the keeper knows the hook too, and nothing the hook
// started outlives the master by more than the drain timeout.
func TestMasterKilledDuringAHook(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "on-ready")
	hardScript(t, hook, "sleep 300 &\nsleep 300")
	b, mark := containStartWith(t, []string{"--on-ready", hook, "--hook-timeout", "60s"}, harness.Build(t).TestWorker)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_started" })
	harness.Eventually(t, 10*time.Second, "the hook and its child running", func() bool {
		return len(hardLiveComm(mark, "sleep")) == 2
	})
	killed := containKillMaster(t, b.PID())
	containAllGone(t, mark, killed)
}

// The old generation dies while the new one is on probation (--min-ready):
// there is nothing left to protect, so the new one takes over at once,
// rather than the service counting as down until the probation ends.
func TestOldGenerationDiesDuringProbation(t *testing.T) {
	b, url := startWorker(t, []string{"--min-ready", "30s", "--admin", "127.0.0.1:0"})
	admin := "http://" + b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "admin_listening" }).Str("addr")
	old := containOpen(t, b.WorkerPID(t, 1))
	b.Signal(t, syscall.SIGHUP)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "probation" && e.Int("gen") == 2 })

	containSignal(t, old, syscall.SIGKILL)
	killed := time.Now()
	st := b.WaitState(t, 5*time.Second, "generation 2 serving", func(s upgrader.Status) bool {
		return s.Ready && s.Generation == 2 && len(s.Workers) == 1 && s.Workers[0].Generation == 2 && s.Workers[0].State == "serving"
	})
	t.Logf("generation 2 served %s after generation 1 was killed", time.Since(killed).Round(time.Millisecond))
	if code, body := hardGet(t, admin+"/-/ready"); code != http.StatusOK {
		t.Fatalf("/-/ready: %d %q, want 200", code, body)
	}
	if _, body := hardGet(t, admin+"/metrics"); !strings.Contains(body, "\nbaton_worker_up 1\n") {
		t.Fatalf("/metrics has no baton_worker_up 1:\n%s", body)
	}
	if body := get(t, url+"/"); !strings.Contains(body, "pid="+strconv.Itoa(st.Workers[0].PID)) {
		t.Fatalf("answered by %q, want generation 2", body)
	}
	if c := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_crashed" }); len(c) > 0 {
		t.Fatalf("the old generation's death was taken for a crash: %v", c)
	}
	stopCleanly(t, b, st.Workers[0].PID)
}

// READY=1 sent by a short-lived helper of the worker (systemd-notify from
// a wrapper script, a notifier that forks, sends and exits) counts: the
// worker's notify socket is its own, so the datagram is the worker's
// whoever sent it, even once the sender has gone. 20 reloads each, every
// one ready, none failing.
func TestReadyFromAShortLivedHelper(t *testing.T) {
	bin := harness.Build(t)
	for _, tc := range []struct {
		name    string
		command func(t *testing.T) []string
	}{
		{"systemd-notify from a wrapper", func(t *testing.T) []string {
			if _, err := exec.LookPath("systemd-notify"); err != nil {
				t.Skip("no systemd-notify on this machine")
			}
			// As root, systemd-notify signs the datagram with its parent's
			// PID; without CAP_SYS_ADMIN, as for a baton that does not run
			// as root, it is its own, which exits at once.
			notifier := "systemd-notify --ready --no-block"
			if os.Geteuid() == 0 {
				notifier = "setpriv --bounding-set -sys_admin " + notifier
			}
			// The server gets LISTEN_PID right from a shell of its own; the
			// wrapper says READY=1 for it and reaps the notifier at once.
			wrapper := filepath.Join(t.TempDir(), "wrapper")
			hardScript(t, wrapper, `sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" -never-ready' `+bin.TestWorker+" &\n"+
				notifier+"\nwait")
			return []string{wrapper}
		}},
		{"a notifier that forks and exits", func(t *testing.T) []string {
			return []string{bin.TestWorker, "-ready-by-helper"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--listen", "http=tcp://127.0.0.1:0", "--ready-timeout", "5s", "--"}, tc.command(t)...)
			b := harness.Start(t, args...)
			const reloads = 20
			for i := 1; i <= reloads; i++ {
				if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" || end.Int("gen") != i+1 {
					t.Fatalf("reload %d: %v", i, end)
				}
			}
			ready := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_ready" })
			if len(ready) != reloads+1 {
				t.Fatalf("%d workers ready, want %d", len(ready), reloads+1)
			}
			t.Logf("%d generations ready, e.g. %q", len(ready), ready[len(ready)-1].Str("how"))
			if f := b.Find(func(e harness.Event) bool { return e.Kind() == "reload_failed" || e.Kind() == "notify_ignored" }); len(f) > 0 {
				t.Fatalf("%v", f)
			}
		})
	}
}

// A worker floods its notify socket with thousands of STOPPING=1 and
// malformed datagrams: baton logs a handful of lines about them, the next
// one saying how many it left out, and serves on.
func TestNotifyFlood(t *testing.T) {
	const flood = 2500
	b, url := startWorker(t, nil, "-notify-flood", strconv.Itoa(flood))
	b.OutputContains(t, 30*time.Second, "notify flood sent")
	about := func(e harness.Event) bool { return e.Kind() == "worker_stopping" || e.Kind() == "notify_malformed" }
	// The last two datagrams come a second after the rest: the first of
	// them is logged with the count of those left out.
	var lines []harness.Event
	suppressed := 0
	harness.Eventually(t, 5*time.Second, "a line counting the datagrams left out", func() bool {
		lines, suppressed = b.Find(about), 0
		for _, e := range lines {
			suppressed += e.Int("suppressed")
		}
		return suppressed > 0 || len(lines) > 10
	})
	t.Logf("%d datagrams: %d log lines about them, which left out %d", 2*flood, len(lines), suppressed)
	if len(lines) > 10 || suppressed < 2*flood-10 {
		t.Fatalf("%d log lines about %d notify datagrams, leaving out %d: want at most 10 lines, accounting for the rest", len(lines), 2*flood, suppressed)
	}
	get(t, url+"/")
	if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
		t.Fatalf("reload after the flood: %v", end)
	}
}

// A new generation under --ready accepting that never waits for
// connections times out and drains for long (it ignores the drain
// signal): baton stops watching it the moment it stops starting, and the
// drain costs the master no CPU.
func TestTimedOutAcceptingWorkerCostsNothing(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--ready", "accepting", "--ready-timeout", "1s",
		"--drain-timeout", "30s", "--", app)
	hardScript(t, app, "trap '' TERM\nexec sleep 300")
	if end := b.Reload(t, 10*time.Second); end.Kind() != "reload_failed" {
		t.Fatalf("want the reload to fail (never ready), got %v", end)
	}
	slow := b.WorkerPID(t, 2)
	if !harness.Alive(slow) {
		t.Fatalf("generation 2 (%d) is not draining", slow)
	}
	used := hardIdleTicks(t, b.PID(), 3*time.Second)
	t.Logf("master used %d clock ticks of CPU in 3s while generation 2 drained", used)
	if !harness.Alive(slow) {
		t.Fatalf("generation 2 (%d) stopped draining during the measurement", slow)
	}
	if used > 2 {
		t.Fatalf("the master used %d clock ticks of CPU in 3s while a timed-out generation drained, want at most 2", used)
	}
}

// A --drain-group generation whose leader exits on the drain signal while
// the rest of its group drains on: baton waits for the group on pidfds,
// so a long drain costs the master no CPU, however many processes the
// host runs (here 400 more).
func TestDrainGroupWaitCostsNothing(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	// The worker leads the group and drains on TERM; a helper in its
	// group ignores it.
	hardScript(t, app, "(trap '' TERM; exec sleep 300) &\nexec "+bin.TestWorker)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-group", "--drain-timeout", "30s", "--", app)
	hardCrowd(t, 400)
	b.Signal(t, syscall.SIGHUP)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "main_exited" && e.Int("gen") == 1 })
	used := hardIdleTicks(t, b.PID(), 3*time.Second)
	t.Logf("master used %d clock ticks of CPU in 3s while generation 1's group drained, %d processes on the host", used, len(harness.Procs()))
	if ex := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("gen") == 1 }); len(ex) > 0 {
		t.Fatalf("generation 1 ended during the measurement: %v", ex)
	}
	if used > 2 {
		t.Fatalf("the master used %d clock ticks of CPU in 3s while a group drained, want at most 2", used)
	}
}

// A SIGSTOPped keeper reads nothing: the master queues what it must tell
// it up to a bound, then kills it and starts a new one, told everything
// anew. The master tells its keeper of every worker and every process it
// adopts, and of their ends; here each worker leaves 50 processes behind,
// which baton adopts, drains and reaps at the next reload. Over 15 reloads
// (some 900 processes told of), the master's descriptors stay bounded,
// and are back where they were once the new keeper runs; the new keeper
// does its job when the master is killed.
func TestStoppedKeeperIsReplaced(t *testing.T) {
	app := filepath.Join(t.TempDir(), "app")
	hardScript(t, app, "i=0\nwhile [ $i -lt 50 ]; do (sleep 1000 &); i=$((i+1)); done\nexec sleep 1000")
	b, mark := containStartWith(t, []string{"--ready", "delay=100ms"}, app)
	master := b.PID()
	// In step: a generation's 50 processes adopted, the last one's reaped.
	for range 2 {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload: %v", end)
		}
	}
	hardSettle(t, master)
	fds := soakFDs(t, master)
	stopped := containKeeper(t, b)
	containSignal(t, stopped, syscall.SIGSTOP)
	t.Cleanup(func() { containSignal(t, stopped, syscall.SIGCONT) })

	const reloads = 15
	peak, wedgedAt := fds, 0
	wedged := func(e harness.Event) bool { return e.Kind() == "keeper_wedged" && e.Int("pid") == stopped.pid }
	for i := 1; i <= reloads; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i, end)
		}
		peak = max(peak, soakFDs(t, master))
		if wedgedAt == 0 && len(b.Find(wedged)) > 0 {
			wedgedAt = i
		}
	}
	adopted := len(b.Find(func(e harness.Event) bool { return e.Kind() == "adopted" }))
	if wedgedAt == 0 {
		t.Fatalf("no keeper_wedged after %d reloads (%d processes adopted) with the keeper stopped; master fds %d, then %d",
			reloads, adopted, fds, soakFDs(t, master))
	}
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "keeper_exited" && e.Int("pid") == stopped.pid })
	fresh := containKeeper(t, b)
	if fresh.pid == stopped.pid || !stopped.exited() {
		t.Fatalf("the stopped keeper %d is still the keeper", stopped.pid)
	}
	hardSettle(t, master)
	after := soakFDs(t, master)
	t.Logf("keeper wedged at reload %d, replaced by %d; %d reloads, %d processes adopted; master fds %d before, %d at the peak, %d after",
		wedgedAt, fresh.pid, reloads, adopted, fds, peak, after)
	if after > fds+2 {
		t.Fatalf("master fds %d before, %d after: %s", fds, after, soakFDList(master))
	}
	// The new keeper knows the workers: it stops them when the master dies.
	killed := containKillMaster(t, b.PID())
	containAllGone(t, mark, killed)
}

// hardIdleTicks waits until pid's CPU time has stopped moving for 200ms,
// then returns the clock ticks it uses over d.
func hardIdleTicks(t *testing.T, pid int, d time.Duration) int {
	t.Helper()
	hardSettle(t, pid)
	before := soakCPUTicks(t, pid)
	time.Sleep(d) // the measurement itself: the master is left alone
	return soakCPUTicks(t, pid) - before
}

// hardSettle waits until pid's CPU time has stopped moving for 200ms, 5 s
// at most: a process that never stops is then measured as it is.
func hardSettle(t *testing.T, pid int) {
	t.Helper()
	prev, since, start := soakCPUTicks(t, pid), time.Now(), time.Now()
	harness.Eventually(t, 10*time.Second, "the master's work done", func() bool {
		if ticks := soakCPUTicks(t, pid); ticks != prev {
			prev, since = ticks, time.Now()
		}
		return time.Since(since) >= 200*time.Millisecond || time.Since(start) >= 5*time.Second
	})
}

// hardCrowd starts n idle processes for the rest of the test: a busy host,
// where reading every process's /proc entry costs.
func hardCrowd(t *testing.T, n int) {
	t.Helper()
	for range n {
		cmd := exec.Command("sleep", "120")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// The file of a --listen unix:// socket is deleted under a running master
// (a temporary-file cleaner, a deploy that removed its directory): the
// socket still listens, but nothing can connect to it. baton notices
// within a second, binds the path anew with its mode, logs an error and
// restores service on a new generation; a reload asked for right after a
// deletion restores first and reports only then. Run under --ready
// accepting, whose watchers read the set of sockets a restore replaces,
// with an on-ready hook, whose environment names their addresses: the
// race detector checks both.
func TestUnixSocketFileDeleted(t *testing.T) {
	bin := harness.Build(t)
	dir := shortTempDir(t)
	path := filepath.Join(dir, "app.sock")
	hook := filepath.Join(dir, "on-ready")
	hardScript(t, hook, `echo "$BATON_ADDRS"`)
	b := harness.Start(t, "--listen", "web=unix://"+path+"?mode=0660", "--ready", "accepting", "--on-ready", hook,
		"--", bin.TestWorker, "-name", "web")
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
	answer := func() string {
		t.Helper()
		resp, err := client.Get("http://app/")
		if err != nil {
			t.Fatalf("over %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if body := answer(); !strings.Contains(body, "gen=1 ") {
		t.Fatalf("answered %q, want generation 1", body)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	st := b.WaitState(t, 5*time.Second, "service restored on a new generation", func(s upgrader.Status) bool {
		return s.Generation == 2 && s.Ready && s.LastReload != nil && s.LastReload.Trigger == "restore"
	})
	t.Logf("restored %s after the socket file was deleted", time.Since(removed).Round(time.Millisecond))
	if !st.LastReload.OK {
		t.Fatalf("restore failed: %+v", st.LastReload)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file %s after the restore: %v %v, want a socket with mode 0660", path, fi, err)
	}
	if body := answer(); !strings.Contains(body, "gen=2 ") {
		t.Fatalf("answered %q, want generation 2", body)
	}
	lost := b.WaitFor(t, time.Second, func(e harness.Event) bool { return e.Kind() == "sockets_lost" })
	if lost.Str("level") != "error" || !strings.Contains(fmt.Sprint(lost["paths"]), path) {
		t.Fatalf("the error line: %v", lost)
	}

	// Deleted again, and a reload at once: it reports after the restore.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload --wait: %d %s", code, errOut)
	}
	if body := answer(); !strings.Contains(body, "gen=4 ") {
		t.Fatalf("after the reload, answered %q, want generation 4 (3 restored the socket)", body)
	}
	if n := len(b.Find(func(e harness.Event) bool { return e.Kind() == "sockets_lost" })); n != 2 {
		t.Fatalf("%d sockets_lost lines, want 2", n)
	}
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d", code)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

// hardScript writes an executable shell script at path.
func hardScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// hardReadPID waits for a script to write a PID into path and returns it.
func hardReadPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	harness.Eventually(t, 10*time.Second, "a PID in "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

// hardGet requests url and returns the status code and body.
func hardGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// hardLiveComm lists the live processes holding mark named comm.
func hardLiveComm(mark, comm string) []harness.Proc {
	var out []harness.Proc
	for _, p := range containLive(mark) {
		if p.Comm == comm {
			out = append(out, p)
		}
	}
	return out
}
