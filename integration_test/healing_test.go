package integration_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// Self-healing: a serving worker that is wedged (silent to --watchdog),
// too big (--max-memory), too old (--max-age) or failing its health check
// (--probe) is replaced the way a reload replaces it, a fresh worker first
// and the old one drained once the fresh one is ready, so POST load
// (which no client retries) loses nothing. Each misbehaviour of the test
// worker is switched on by a file the test removes once baton has
// started, so the first worker misbehaves and its replacements do not.

// A worker that stops sending WATCHDOG=1 but still serves is replaced one
// --watchdog after its last ping, and not before: while it pings, it
// serves on.
// A pause that freezes baton with its workers (`podman pause`, here
// SIGSTOP to each) for longer than the watchdog's interval: once they
// run again, the deadlines that passed meanwhile prove nothing, since
// baton could hear no ping, and nothing is replaced.
func TestHealWatchdogAfterAPause(t *testing.T) {
	b, url := startWorker(t, []string{"--watchdog", "1s", "--workers", "2"})
	st := b.WaitState(t, 20*time.Second, "2 workers serving", func(s upgrader.Status) bool {
		return len(s.Workers) == 2 && s.Workers[0].State == "serving" && s.Workers[1].State == "serving"
	})
	workers := workerPIDs(st)
	keeper := harness.WaitProc(t, 10*time.Second, "the keeper", func(p harness.Proc) bool {
		return p.PPID == b.PID() && p.Comm == "baton-keeper"
	})
	frozen := append([]int{b.PID(), keeper.PID}, workers...)
	for _, pid := range frozen {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	time.Sleep(2500 * time.Millisecond) // the pause itself
	for _, pid := range frozen {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	b.WaitFor(t, 5*time.Second, isEvent("watchdog_deferred"))
	load := startLoad(t, url+"/")
	time.Sleep(2 * time.Second) // two intervals of pings, heard
	if n := len(b.Find(isEvent("replacing"))); n != 0 {
		t.Fatalf("%d workers replaced after a pause of baton and its workers, want none", n)
	}
	requireNoFailures(t, load)
	if now := workerPIDs(b.State(t)); !slices.Equal(now, workers) {
		t.Fatalf("workers %v after the pause, were %v", now, workers)
	}
}

// baton alone starved (here stopped 3 s, run 50 ms, twice over) sees
// every deadline late; a worker that stopped pinging is still replaced,
// at the second late deadline, not once baton runs freely again.
func TestHealWatchdogWhileBatonIsStarved(t *testing.T) {
	t.Parallel() // it mostly waits, stopped
	wedged := flagFile(t, "wedged")
	b, _ := startWorker(t, []string{"--watchdog", "1s"}, "-watchdog-stop-after", "500ms", "-only-if-exists", wedged)
	os.Remove(wedged)
	first := b.WorkerPID(t, 1)
	// Its last ping heard, before baton is starved: baton hears none late.
	b.OutputContains(t, 5*time.Second, "silent to the watchdog")
	for range 2 {
		syscall.Kill(b.PID(), syscall.SIGSTOP)
		time.Sleep(3 * time.Second) // starved
		syscall.Kill(b.PID(), syscall.SIGCONT)
		time.Sleep(50 * time.Millisecond)
	}
	replacing := b.WaitFor(t, 5*time.Second, isEvent("replacing"))
	if replacing.Int("pid") != first {
		t.Fatalf("replaced %v, want worker %d", replacing, first)
	}
	if n := len(b.Find(isEvent("watchdog_deferred"))); n != 1 {
		t.Fatalf("%d watchdog_deferred events before the replacement, want 1", n)
	}
}

func TestHealWatchdogReplacesASilentWorker(t *testing.T) {
	wedged := flagFile(t, "wedged")
	b, url := startWorker(t, []string{"--watchdog", "1s", "--admin", "127.0.0.1:0"},
		"-watchdog-stop-after", "2s", "-only-if-exists", wedged)
	os.Remove(wedged)
	admin := "http://" + b.WaitFor(t, 5*time.Second, isEvent("admin_listening")).Str("addr")
	first := b.WorkerPID(t, 1)
	// What systemd gives a service with WatchdogSec=1s, WATCHDOG_PID set
	// to the worker itself (the test worker pings only if it is).
	env := environ(t, first)
	if env["WATCHDOG_USEC"] != "1000000" || env["WATCHDOG_PID"] != strconv.Itoa(first) {
		t.Fatalf("worker %d has WATCHDOG_USEC=%q WATCHDOG_PID=%q, want 1000000 and its own PID", first, env["WATCHDOG_USEC"], env["WATCHDOG_PID"])
	}
	load := startLoad(t, url+"/")

	replacing := b.WaitFor(t, 15*time.Second, isEvent("replacing"))
	end := b.WaitFor(t, 15*time.Second, healed("watchdog"))
	if replacing.Int("pid") != first || replacing.Str("trigger") != "watchdog" {
		t.Fatalf("replaced %v, want worker %d for its watchdog", replacing, first)
	}
	// It pings every 0.5s for 2s, then falls silent: its last ping came
	// between 1.5s and 2s after it was ready, and the watchdog bit 1s later.
	age := eventTime(t, replacing).Sub(eventTime(t, readyOf(t, b, first)))
	t.Logf("worker %d, silent after 2s of pings, was replaced %s after it was ready; the replacement took %s", first, age.Round(time.Millisecond), end.Str("took"))
	if age < 2400*time.Millisecond || age > 3500*time.Millisecond {
		t.Fatalf("worker %d was replaced %s after it was ready, want 2.5s to 3s, 1s after its last ping (give or take the scheduler)", first, age)
	}
	waitGone(t, b, first)
	// Its replacement pings: nothing more happens for twice the watchdog.
	time.Sleep(2 * time.Second)
	if n := len(b.Find(isEvent("replacing"))); n != 1 {
		t.Fatalf("%d replacements, want 1: the fresh worker pings", n)
	}
	requireNoFailures(t, load)
	if st := b.State(t); st.LastReload == nil || st.LastReload.Trigger != "watchdog" || st.LastReload.Result != "ok" {
		t.Fatalf("status last_reload %+v, want trigger watchdog, result ok", st.LastReload)
	}
	if m := metrics(t, admin); m[`baton_reloads_total{result="ok",trigger="watchdog"}`] != "1" {
		t.Fatalf(`baton_reloads_total{result="ok",trigger="watchdog"} = %q, want 1`, m[`baton_reloads_total{result="ok",trigger="watchdog"}`])
	}
	requireNoZombies(t, b.PID())
}

// A worker growing 20 MB a second under --max-memory 60MB is replaced
// before it reaches 100 MB: baton looks every second, and the fresh worker
// is ready well within the next.
func TestHealMemoryReplacesAGrowingWorker(t *testing.T) {
	leaks := flagFile(t, "leaks")
	b, url := startWorker(t, []string{"--max-memory", "60MB"}, "-grow-mb-per-s", "20", "-only-if-exists", leaks)
	os.Remove(leaks)
	first := b.WorkerPID(t, 1)
	load := startLoad(t, url+"/")

	replacing := b.WaitFor(t, 20*time.Second, isEvent("replacing"))
	end := b.WaitFor(t, 10*time.Second, healed("memory"))
	if replacing.Int("pid") != first || replacing.Str("trigger") != "memory" {
		t.Fatalf("replaced %v, want worker %d for its memory", replacing, first)
	}
	waitGone(t, b, first)
	// The worker stops growing once it drains, as a leak that grows with
	// the requests served does, and says how big it got.
	m := regexp.MustCompile(fmt.Sprintf(`exiting pid=%d peak_rss_kb=(\d+)`, first)).FindStringSubmatch(b.Output())
	if m == nil {
		t.Fatalf("worker %d did not report its peak memory", first)
	}
	peak, _ := strconv.Atoi(m[1])
	age := eventTime(t, replacing).Sub(eventTime(t, readyOf(t, b, first)))
	t.Logf("worker %d grew for %s, was replaced (%s; took %s) and peaked at %d MB", first, age.Round(time.Millisecond), replacing.Str("why"), end.Str("took"), peak>>10)
	if peak >= 100<<10 {
		t.Fatalf("worker %d peaked at %d kB, want it replaced before 100 MB", first, peak)
	}
	requireNoFailures(t, load)
	if n := len(b.Find(isEvent("replacing"))); n != 1 {
		t.Fatalf("%d replacements, want 1: the fresh worker does not grow", n)
	}
	requireNoZombies(t, b.PID())
}

// --max-age 2s recycles every worker once it has served 2s, give or take
// a twentieth.
func TestHealMaxAgeRecyclesWorkers(t *testing.T) {
	b, url := startWorker(t, []string{"--max-age", "2s"})
	load := startLoad(t, url+"/")
	const recycled = 3
	harness.Eventually(t, 20*time.Second, "3 workers recycled", func() bool {
		return len(b.Find(healed("age"))) >= recycled
	})
	requireNoFailures(t, load)
	var ages []string
	for _, r := range b.Find(isEvent("replacing"))[:recycled] {
		pid := r.Int("pid")
		age := eventTime(t, r).Sub(eventTime(t, readyOf(t, b, pid)))
		ages = append(ages, age.Round(time.Millisecond).String())
		if r.Str("trigger") != "age" || age < 1850*time.Millisecond || age > 2300*time.Millisecond {
			t.Fatalf("worker %d replaced after serving %s (%v), want for its age after 1.9s to 2.1s", pid, age, r)
		}
		waitGone(t, b, pid)
	}
	t.Logf("workers recycled after serving %s", strings.Join(ages, ", "))
	requireNoZombies(t, b.PID())
}

// Workers that never exit after draining (a shutdown hook stuck forever),
// with a 60s --drain-timeout and --max-draining 2, pile up at one a
// reload; the oldest is killed as soon as a third would drain, so status
// never shows more than 1 serving and 2 draining.
func TestHealMaxDrainingBoundsLingeringWorkers(t *testing.T) {
	b, url := startWorker(t, []string{"--drain-timeout", "60s", "--max-draining", "2"}, "-linger")
	load := startLoad(t, url+"/")
	const reloads = 8
	// Status is asked for over the control socket as fast as it answers,
	// beside the reloads, and each answer checked.
	sampler := sampleStatus(t, b)
	// servingGen is the generation status shows serving.
	servingGen := func() int {
		for _, w := range b.State(t).Workers {
			if w.State == "serving" {
				return w.Generation
			}
		}
		return 0
	}
	for i := 1; i <= reloads; i++ {
		// A reload ends only once the worker it replaced has exited, but
		// the next one begins as soon as the new worker serves.
		b.Signal(t, syscall.SIGHUP)
		harness.Eventually(t, 30*time.Second, fmt.Sprintf("generation %d serving", i+1), func() bool {
			return servingGen() == i+1
		})
		// The worker it replaced has drained, and lingers.
		b.OutputContains(t, 10*time.Second, fmt.Sprintf("drained, lingering pid=%d", b.WorkerPID(t, i)))
	}
	samples, maxServing, maxDraining, worst := sampler()
	requireNoFailures(t, load)

	cut := b.Find(isEvent("drain_cut"))
	if len(cut) != reloads-2 {
		t.Fatalf("%d draining workers cut short, want %d (all but the last 2 of %d)", len(cut), reloads-2, reloads)
	}
	for _, e := range cut {
		waitGone(t, b, e.Int("pid"))
	}
	st := b.State(t)
	var left []int
	for _, w := range st.Workers {
		if w.State == "draining" {
			left = append(left, w.Generation)
		}
	}
	if fmt.Sprint(left) != fmt.Sprint([]int{reloads - 1, reloads}) {
		t.Fatalf("generations %v still drain, want the last 2 replaced: %d and %d", left, reloads-1, reloads)
	}
	t.Logf("%d reloads of lingering workers, %d status samples: at most %d serving and %d draining; %d cut short %s before their drain timeout",
		reloads, samples, maxServing, maxDraining, len(cut), cut[0].Str("cut_short_by"))
	if maxServing > 1 || maxDraining > 2 {
		t.Fatalf("status showed %d serving and %d draining workers at once, want at most 1 and 2: %+v", maxServing, maxDraining, worst)
	}
	requireNoZombies(t, b.PID())

	// A fast stop kills the two left: nothing outlives the master.
	b.Signal(t, syscall.SIGQUIT)
	b.Wait(t, 10*time.Second)
	for _, w := range st.Workers {
		if harness.Alive(w.PID) {
			t.Fatalf("worker %d outlived the master", w.PID)
		}
	}
}

// A release that answers 500 on /healthz is vetoed by --probe while on
// --min-ready probation: `reload --wait` exits 1 saying so, and the old
// release, never drained, serves on.
func TestHealProbeVetoesAFailingRelease(t *testing.T) {
	bin := harness.Build(t)
	addr := freePort(t)
	probe := "http://" + addr + "/healthz"
	dir := t.TempDir()
	harness.Release(t, dir, 1, bin.TestWorker)
	b := harness.Start(t, "--listen", "http=tcp://"+addr, "--min-ready", "3s", "--probe", probe, "--probe-interval", "500ms",
		"--", filepath.Join(dir, "current", "app"))
	first := b.WorkerPID(t, 1)
	load := startLoad(t, "http://"+addr+"/")

	harness.Release(t, dir, 2, bin.TestWorker, "-healthz-500-after", "0s")
	began := time.Now()
	code, _, stderr := b.ReloadWait(t, 30*time.Second)
	took := time.Since(began)
	if want := "probe failed: 500 from " + probe; code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("reload --wait of a release failing its probe: exit %d, %q; want exit 1 saying %q", code, stderr, want)
	}
	t.Logf("reload --wait exited 1 after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr))
	if took >= 3*time.Second {
		t.Fatalf("the veto took %s, want it within the 3s probation", took)
	}
	waitGone(t, b, b.WorkerPID(t, 2))
	st := b.State(t)
	if st.WorkerPID != first || st.Generation != 1 || st.LastReload == nil || st.LastReload.Result == "ok" {
		t.Fatalf("status %+v (last reload %+v), want worker %d of generation 1 serving on after a failed reload", st, st.LastReload, first)
	}
	// The old release serves on, and so does its probe: no replacement.
	time.Sleep(time.Second)
	requireNoFailures(t, load)
	if n := len(b.Find(isEvent("replacing"))); n != 0 {
		t.Fatalf("%d replacements after the veto, want none: the old release passes its probe", n)
	}
	requireNoZombies(t, b.PID())
}

// A serving worker that starts answering 500 on /healthz is replaced
// after --probe-failures failures in a row.
func TestHealProbeReplacesAFailingWorker(t *testing.T) {
	sick := flagFile(t, "sick")
	addr := freePort(t)
	probe := "http://" + addr + "/healthz"
	bin := harness.Build(t)
	b := harness.Start(t, "--listen", "http=tcp://"+addr, "--probe", probe, "--probe-interval", "200ms", "--probe-failures", "3",
		"--", bin.TestWorker, "-healthz-500-after", "2s", "-only-if-exists", sick)
	os.Remove(sick)
	first := b.WorkerPID(t, 1)
	load := startLoad(t, "http://"+addr+"/")

	replacing := b.WaitFor(t, 15*time.Second, isEvent("replacing"))
	end := b.WaitFor(t, 10*time.Second, healed("probe"))
	if replacing.Int("pid") != first || replacing.Str("trigger") != "probe" || !strings.Contains(replacing.Str("why"), "500 from "+probe) {
		t.Fatalf("replaced %v, want worker %d for its probe's 500", replacing, first)
	}
	age := eventTime(t, replacing).Sub(eventTime(t, readyOf(t, b, first)))
	t.Logf("worker %d, failing its probe from 2s on, was replaced %s after it was ready (%s); took %s", first, age.Round(time.Millisecond), replacing.Str("why"), end.Str("took"))
	// 3 failing probes 200ms apart from 2s on: about 2.4s to 2.6s.
	if age < 2*time.Second || age > 3500*time.Millisecond {
		t.Fatalf("worker %d replaced %s after it was ready, want 3 probes (200ms apart) after it began failing at 2s", first, age)
	}
	waitGone(t, b, first)
	time.Sleep(time.Second)
	requireNoFailures(t, load)
	if n := len(b.Find(isEvent("replacing"))); n != 1 {
		t.Fatalf("%d replacements, want 1: the fresh worker passes its probe", n)
	}
	requireNoZombies(t, b.PID())
}

// A worker that asks for 3s more with EXTEND_TIMEOUT_USEC= and is ready
// after 2s is ready under --ready-timeout 1s, at start and at a reload;
// without asking, it is not.
func TestHealExtendTimeoutUsec(t *testing.T) {
	bin := harness.Build(t)
	dir := t.TempDir()
	harness.Release(t, dir, 1, bin.TestWorker, "-extend-timeout", "3s", "-ready-after", "2s")
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--ready-timeout", "1s", "--", filepath.Join(dir, "current", "app"))
	url := "http://" + b.Addr(t, "http") + "/"
	load := startLoad(t, url)

	harness.Release(t, dir, 2, bin.TestWorker, "-extend-timeout", "3s", "-ready-after", "2s")
	if code, _, stderr := b.ReloadWait(t, 30*time.Second); code != 0 {
		t.Fatalf("reload of a worker that asks for more time: exit %d: %s", code, stderr)
	}
	ready := readyOf(t, b, b.WorkerPID(t, 2))
	if took := faultTook(t, ready); took < 2*time.Second {
		t.Fatalf("generation 2 ready after %s, want 2s", took)
	}
	if n := len(b.Find(isEvent("start_extended"))); n != 2 {
		t.Fatalf("%d start_extended events, want 2 (the start and the reload)", n)
	}
	t.Logf("worker ready after %s under --ready-timeout 1s", ready.Str("took"))

	harness.Release(t, dir, 3, bin.TestWorker, "-ready-after", "2s")
	if code, _, stderr := b.ReloadWait(t, 30*time.Second); code != 1 || !strings.Contains(stderr, "not ready") {
		t.Fatalf("reload of a worker that is ready after 2s without asking: exit %d: %s, want 1 (not ready within 1s)", code, stderr)
	}
	requireNoFailures(t, load)
	if st := b.State(t); st.Generation != 2 {
		t.Fatalf("generation %d serves, want 2", st.Generation)
	}
	requireNoZombies(t, b.PID())
}

// A replacement whose fresh worker fails keeps the old worker serving and
// is tried again with backoff until it succeeds.
func TestHealFailedReplacementKeepsTheOldWorker(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "broken")
	b, url := startWorker(t, []string{"--max-age", "1s"}, "-fail-if-exists", broken)
	first := b.WorkerPID(t, 1)
	touch(t, broken) // from now on, a fresh worker fails at start
	load := startLoad(t, url+"/")

	harness.Eventually(t, 15*time.Second, "two failed replacements", func() bool {
		return len(b.Find(isEvent("replacement_failed"))) >= 2
	})
	st := b.State(t)
	if st.WorkerPID != first || st.LastReload == nil || st.LastReload.Trigger != "age" || st.LastReload.Result != "failed" {
		t.Fatalf("status %+v (last reload %+v), want worker %d serving on after a failed replacement for its age", st, st.LastReload, first)
	}
	var retries []string
	for _, e := range b.Find(isEvent("replacement_failed")) {
		retries = append(retries, e.Str("retry_in"))
	}
	os.Remove(broken)
	end := b.WaitFor(t, 15*time.Second, healed("age"))
	waitGone(t, b, first)
	requireNoFailures(t, load)
	t.Logf("worker %d served on through %d failed replacements (retried in %s) and was replaced once one succeeded (took %s)",
		first, len(retries), strings.Join(retries, ", "), end.Str("took"))
	if retries[0] == retries[1] {
		t.Fatalf("retries after %s, want a growing backoff", strings.Join(retries, ", "))
	}
	requireNoZombies(t, b.PID())
}

// An idle master with --watchdog and --max-memory wakes only for them:
// for its worker's ping and for the memory check every second. It costs
// next to nothing: at most 10ms (1 clock tick) of CPU over 10s. The time
// is the scheduler's own count for the master's threads, in nanoseconds;
// /proc/PID/stat's utime and stime, rounded and scaled apart, read 2
// ticks for 6ms as well as 0 for 11ms. The watchdog is 10s, so the
// worker pings every 5s, half the interval, as systemd asks. Every wake
// costs a Go process ~0.2ms of CPU on a busy virtual machine, so a ping
// every second (--watchdog 2s) adds ~2ms (docs/self-healing.md).
func TestHealIdleMasterUsesNoCPU(t *testing.T) {
	const window = 10 * time.Second
	flags := []string{"--watchdog", "10s", "--max-memory", "1GB"}
	b, url := startWorker(t, flags)
	get(t, url+"/")
	master := b.PID()
	prev, since := soakCPUTicks(t, master), time.Now()
	harness.Eventually(t, 10*time.Second, "the master's start-up work done", func() bool {
		if ticks := soakCPUTicks(t, master); ticks != prev {
			prev, since = ticks, time.Now()
		}
		return time.Since(since) >= 200*time.Millisecond
	})
	// Other programs on the machine only add to it (they evict the
	// master's caches, they delay it while it spins for work): the best
	// of up to 3 windows is the master's own cost.
	var tries []string
	best := time.Duration(math.MaxInt64)
	for len(tries) < 3 && best > 10*time.Millisecond {
		used, ticks := idleCPU(t, master, window)
		best = min(best, used)
		tries = append(tries, fmt.Sprintf("%s (%d clock ticks)", used.Round(10*time.Microsecond), ticks))
	}
	t.Logf("idle master %d with %s used %s of CPU in %s", master, strings.Join(flags, " "), strings.Join(tries, ", then "), window)
	if n := len(b.Find(isEvent("replacing"))); n != 0 {
		t.Fatalf("%d replacements, want none: the worker pings and is small", n)
	}
	if best > 10*time.Millisecond {
		t.Fatalf("an idle self-healing master used %s of CPU in %s, want at most 10ms", strings.Join(tries, ", "), window)
	}
}

// idleCPU leaves the master pid alone for window and returns the CPU time
// its threads used meanwhile, and the clock ticks /proc/PID/stat added.
func idleCPU(t *testing.T, pid int, window time.Duration) (used time.Duration, ticks int) {
	t.Helper()
	ticks, ran := soakCPUTicks(t, pid), threadsRan(t, pid)
	time.Sleep(window) // the measurement itself: the master is left alone
	ticks = soakCPUTicks(t, pid) - ticks
	for tid, after := range threadsRan(t, pid) {
		used += after - ran[tid] // a thread started meanwhile counts whole
		delete(ran, tid)
	}
	if len(ran) > 0 {
		t.Fatalf("threads of the master exited during the measurement, their time unknown: %v", ran)
	}
	return used, ticks
}

// threadsRan is how long each thread of pid has run on a CPU, from
// /proc/PID/task/TID/schedstat.
func threadsRan(t *testing.T, pid int) map[string]time.Duration {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]time.Duration{}
	for _, tid := range tids {
		b, err := os.ReadFile(filepath.Join(dir, tid.Name(), "schedstat"))
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(b))
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("%s/%s/schedstat: %q", dir, tid.Name(), b)
		}
		ran[tid.Name()] = time.Duration(ns)
	}
	return ran
}

// sampleStatus asks b for its status over the control socket, again and
// again, until the returned function is called; that returns how many
// answers came, the most serving and draining workers one showed, and the
// worst answer's workers.
func sampleStatus(t *testing.T, b *harness.Baton) func() (samples, serving, draining int, worst []upgrader.WorkerStatus) {
	var (
		samples, serving, draining int
		worst                      []upgrader.WorkerStatus
	)
	path := control.DefaultPath(b.PIDFile)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, _, err := control.Ask(path, control.Request{Command: "status"}, 5*time.Second)
			if err != nil || resp.Status == nil {
				continue
			}
			s, d := 0, 0
			for _, w := range resp.Status.Workers {
				switch w.State {
				case "serving":
					s++
				case "draining":
					if !w.Killed { // killed for --max-draining, not yet reaped
						d++
					}
				}
			}
			samples++
			if s > serving || d > draining {
				worst = resp.Status.Workers
			}
			serving, draining = max(serving, s), max(draining, d)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	})
	return func() (int, int, int, []upgrader.WorkerStatus) {
		close(stop)
		<-done
		return samples, serving, draining, worst
	}
}

// flagFile creates a file that switches a misbehaviour of the test worker
// on (-only-if-exists) and returns its path.
func flagFile(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	touch(t, path)
	return path
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func isEvent(kind string) func(harness.Event) bool {
	return func(e harness.Event) bool { return e.Kind() == kind }
}

// healed matches the end of a replacement for trigger that took over.
func healed(trigger string) func(harness.Event) bool {
	return func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Str("trigger") == trigger }
}

// reloadEnded matches the end of a reload asked for with a signal or
// `baton reload` (not of a replacement).
func reloadEnded(e harness.Event) bool {
	switch e.Kind() {
	case "reload_complete", "reload_failed", "rolled_back":
		return e.Str("trigger") == "signal" || e.Str("trigger") == "control"
	}
	return false
}

// readyOf is the worker_ready event of worker pid.
func readyOf(t *testing.T, b *harness.Baton, pid int) harness.Event {
	t.Helper()
	return b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_ready" && e.Int("pid") == pid })
}

// waitGone waits for baton to report worker pid's exit and for the
// process to be gone.
func waitGone(t *testing.T, b *harness.Baton, pid int) {
	t.Helper()
	b.WaitFor(t, 15*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == pid })
	harness.Eventually(t, 5*time.Second, fmt.Sprintf("worker %d gone", pid), func() bool { return !harness.Alive(pid) })
}

// environ is process pid's environment.
func environ(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}
