package integration_test

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/upgrader"
)

// Fault injection: each test makes one thing go wrong around a real master
// and checks that baton contains it. (A new generation that exits at start
// or never becomes ready, a port in use and an unwritable pidfile are in
// core_test.go.)

// An old generation that ignores the drain signal is SIGKILLed after
// --drain-timeout together with everything in its process group, and the
// reload completes.
func TestFaultOldGenerationIgnoresTheDrainSignal(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	// Generation 1 ignores TERM and leaves a grandchild (sleep 300) in its
	// process group.
	harness.Deploy(t, app, bin.TestWorker, "-ignore-drain", "-orphan")
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", "1s", "--", app)
	url := "http://" + b.Addr(t, "http") + "/"
	old := b.WorkerPID(t, 1)
	var group []harness.Proc
	harness.Eventually(t, 10*time.Second, "the worker's grandchild running in its process group", func() bool {
		group = faultLiveGroup(old)
		return len(group) >= 2
	})
	t.Logf("generation 1's process group %d: %+v", old, group)

	harness.Deploy(t, app, bin.TestWorker)
	end := b.Reload(t, 20*time.Second)
	if end.Kind() != "reload_complete" || end.Int("gen") != 2 {
		t.Fatalf("want the reload to complete with generation 2, got %v", end)
	}
	if took := faultTook(t, end); took < time.Second {
		t.Fatalf("reload took %s: the old generation did not hold out until the drain timeout (1s)", took)
	}
	if len(b.Find(func(e harness.Event) bool {
		return e.Kind() == "drain_timeout" && e.Int("pid") == old
	})) != 1 {
		t.Fatalf("no log line about killing generation 1's process group after the drain timeout")
	}
	exit := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == old })
	if exit.Str("how") != "killed by signal KILL" {
		t.Fatalf("generation 1 ended %q, want killed by signal KILL", exit.Str("how"))
	}
	harness.Eventually(t, 5*time.Second, "no process left in generation 1's process group", func() bool {
		return len(faultLiveGroup(old)) == 0
	})
	if body := get(t, url); !strings.Contains(body, "pid="+strconv.Itoa(b.WorkerPID(t, 2))) {
		t.Fatalf("after the reload, answered by %q, want generation 2", body)
	}
	requireNoZombies(t, b.PID())

	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
}

// 100 HUPs within a second do not start 100 generations: while a reload
// runs, further HUPs are coalesced into one more reload after it, so a new
// generation starts only when the previous reload has ended, and never
// more than two workers run at once. Under load, no request fails, and the
// last generation serves. Two storms: 100 HUPs at once, then 100 paced
// over 900ms.
// A worker that is stopped (SIGSTOP, a TTIN sent to a whole unit, a
// debugger) when it is told to drain is continued, as systemd does after
// its stop signal: it answers its request in flight and exits, instead of
// waiting, stopped, for SIGKILL at the drain timeout.
func TestFaultStoppedWorkerIsContinuedToDrain(t *testing.T) {
	b, url := startWorker(t, []string{"--drain-timeout", "20s"})
	old := b.State(t).WorkerPID
	slow := b.InFlight(t, url, time.Second)
	if err := syscall.Kill(old, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, errOut := b.ReloadWait(t, 40*time.Second)
	took := time.Since(start)
	t.Logf("reload with the old worker stopped: exit %d after %s", code, took.Round(time.Millisecond))
	if code != 0 || took > 10*time.Second {
		t.Fatalf("reload --wait exited %d after %s (%s): want 0, the stopped worker continued and drained long before its 20s drain timeout", code, took, errOut)
	}
	if a := <-slow; a.Err != nil {
		t.Fatalf("the stopped worker's request in flight: %v", a.Err)
	}
}

func TestFaultHUPStorm(t *testing.T) {
	b, url := startWorker(t, nil)
	load := startLoad(t, url+"/")

	for _, storm := range []struct {
		name string
		pace time.Duration
	}{
		{"100 HUPs at once", 0},
		{"100 HUPs over 900ms", 9 * time.Millisecond},
	} {
		seen := len(b.Events())
		const hups = 100
		first := time.Now()
		var last time.Time // when the last HUP was sent
		for i := 0; i < hups; i++ {
			if wait := time.Until(first.Add(time.Duration(i) * storm.pace)); wait > 0 {
				time.Sleep(wait)
			}
			last = time.Now()
			b.Signal(t, syscall.SIGHUP)
		}
		span := last.Sub(first)
		faultSettle(t, b, last)

		var starts, queued, failed int
		minTook, minReady := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
		for _, e := range b.Events()[seen:] {
			if e.Kind() == "reload_queued" {
				queued++
			}
			switch e.Kind() {
			case "worker_started":
				starts++
			case "reload_failed":
				failed++
			case "reload_complete":
				minTook = min(minTook, faultTook(t, e))
			case "worker_ready":
				minReady = min(minReady, faultTook(t, e))
			}
		}
		t.Logf("%s: sent in %s, started %d generations (HUPs coalesced behind a running reload %d times); fastest reload %s",
			storm.name, span.Round(time.Microsecond), starts, queued, minTook)
		if failed > 0 {
			t.Fatalf("%s: %d reloads failed", storm.name, failed)
		}
		// One reload runs and at most one waits behind it; a reload starts
		// only once the previous one's worker serves. So all but the last
		// one started within the storm (give the master 50ms to see a
		// signal), at least the fastest start-to-ready apart.
		if bound := int((span+50*time.Millisecond)/minReady) + 2; starts < 1 || starts > bound {
			t.Fatalf("%s: %d HUPs over %s started %d generations, want 1 to %d (workers take at least %s to be ready)",
				storm.name, hups, span, starts, bound, minReady)
		}
		// (HUPs sent at once mostly merge in the kernel, one pending
		// signal, before the master sees them.)
		if storm.pace > 0 && queued < 1 {
			t.Fatalf("%s: no HUP was coalesced behind a running reload", storm.name)
		}

		gen := b.Generation()
		want := b.WorkerPID(t, gen)
		if body := get(t, url+"/"); !strings.Contains(body, "pid="+strconv.Itoa(want)) {
			t.Fatalf("%s: afterwards, answered by %q, want generation %d (pid %d)", storm.name, body, gen, want)
		}
		if kids := faultLiveChildren(b.PID()); len(kids) != 1 || kids[0].PID != want {
			t.Fatalf("%s: afterwards the master's children are %+v, want only generation %d's worker %d", storm.name, kids, gen, want)
		}
	}

	// A reload begins once the previous one's workers serve, while its old
	// ones may still drain: at most the serving worker and its
	// replacement run undrained, and at most --max-draining (8) drain.
	draining := map[int]bool{}
	live, maxLive, maxDraining := 0, 0, 0
	for _, e := range b.Events() {
		switch e.Kind() {
		case "worker_started":
			live++
		case "draining":
			live--
			draining[e.Int("pid")] = true
		case "worker_exited":
			if draining[e.Int("pid")] {
				delete(draining, e.Int("pid"))
			} else {
				live--
			}
		}
		maxLive, maxDraining = max(maxLive, live), max(maxDraining, len(draining))
	}
	t.Logf("at most %d workers ran undrained and %d drained at once", maxLive, maxDraining)
	if maxLive > 2 || maxDraining > 8 {
		t.Fatalf("%d workers ran undrained and %d drained at once, want at most 2 (the serving one and its replacement) and 8 (--max-draining)", maxLive, maxDraining)
	}
	requireNoFailures(t, load)
	requireNoZombies(t, b.PID())
}

// A SIGKILLed master cannot drain anything: its workers get the parent
// death signal (the drain signal), finish their requests and exit, so no
// orphan is left holding the port and a new master can bind it.
func TestFaultMasterSIGKILLed(t *testing.T) {
	bin := harness.Build(t)
	b, url := startWorker(t, nil)
	addr := b.Addr(t, "http")
	// Workers of later generations were started long after the master's
	// first threads: their parent-death signal must still mean "master
	// died", not "some thread of the master exited".
	for i := 0; i < 3; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
	}
	worker := b.WorkerPID(t, 4)

	done := make(chan string, 1)
	go func() {
		resp, err := http.Get(url + "/slow?d=1s")
		if err != nil {
			done <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- string(body)
	}()
	b.OutputContains(t, 10*time.Second, "slow request started")
	if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	if body := <-done; !strings.Contains(body, "slow done") || !strings.Contains(body, "pid="+strconv.Itoa(worker)) {
		t.Fatalf("the worker's in-flight request after the master was killed: %q", body)
	}
	harness.Eventually(t, 10*time.Second, "the orphaned worker exits", func() bool { return !harness.Alive(worker) })
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("after the master was killed and its worker exited, %s cannot be bound: %v", addr, err)
	}
	l.Close()
	if crashed := b.Find(faultIs("worker_crashed")); len(crashed) > 0 {
		t.Fatalf("a worker died while the master lived (parent-death signal sent early?): %v", crashed)
	}

	// The supervisor reaps the killed master (the test does once its
	// output ends: the worker and the keeper have exited) and starts baton
	// again: same port, same (stale) pidfile.
	b.Wait(t, 10*time.Second)
	again := harness.Start(t, "--pidfile", b.PIDFile, "--listen", "http=tcp://"+addr, "--", bin.TestWorker)
	if body := get(t, url+"/"); !strings.Contains(body, "pid="+strconv.Itoa(again.WorkerPID(t, 1))) {
		t.Fatalf("the restarted master's worker does not answer: %q", body)
	}
}

// A reload after the worker's binary was deleted fails with a message that
// says so, and the old generation keeps serving.
func TestFaultWorkerBinaryDeletedBeforeAReload(t *testing.T) {
	bin := harness.Build(t)
	for _, tc := range []struct {
		name   string
		script bool // the command is a deploy script that execs the copy
		want   []string
	}{
		{"the command itself", false, []string{"cannot start generation 2", "no such file or directory"}},
		{"the program a deploy script execs", true, []string{"exited with status 127 before it was ready"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyPath := filepath.Join(dir, "worker-copy")
			faultCopyFile(t, bin.TestWorker, copyPath)
			command := copyPath
			if tc.script {
				command = filepath.Join(dir, "app")
				harness.Deploy(t, command, copyPath)
			}
			b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", command)
			url := "http://" + b.Addr(t, "http") + "/"
			load := startLoad(t, url)
			pid := b.WorkerPID(t, 1)

			if err := os.Remove(copyPath); err != nil {
				t.Fatal(err)
			}
			end := b.Reload(t, 20*time.Second)
			msg := end.Str("error")
			if end.Kind() != "reload_failed" || !strings.Contains(msg, "generation 1 is still serving") {
				t.Fatalf("want a failed reload saying generation 1 still serves, got %v", end)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("reload failed with %q, want it to say %q", msg, w)
				}
			}
			if !tc.script && !strings.Contains(msg, copyPath) {
				t.Fatalf("reload failed with %q, want it to name %s", msg, copyPath)
			}
			if tc.script && !strings.Contains(b.Output(), copyPath) {
				t.Fatalf("the deploy script did not say what is missing:\n%s", b.Output())
			}
			t.Logf("reload failed: %s", msg)
			if body := get(t, url); !strings.Contains(body, "pid="+strconv.Itoa(pid)) {
				t.Fatalf("after the failed reload, answered by %q, want the old worker %d", body, pid)
			}

			// The binary is back: the next reload succeeds.
			faultCopyFile(t, bin.TestWorker, copyPath)
			if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
				t.Fatalf("reload with the binary back: %v", end)
			}
			requireNoFailures(t, load)
			requireNoZombies(t, b.PID())
		})
	}
}

// A worker that keeps crashing is restarted with a growing backoff, and
// after --restart-limit consecutive crashes baton gives up, says so, and
// exits 1.
func TestFaultCrashLoopBacksOffThenGivesUp(t *testing.T) {
	bin := harness.Build(t)
	broken := filepath.Join(t.TempDir(), "broken")
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--restart-limit", "3",
		"--", bin.TestWorker, "-fail-if-exists", broken)
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(b.WorkerPID(t, 1), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := b.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("baton exited %d after a crash loop, want 1", code)
	}

	// 1 start, then 3 restarts that fail at once; the 4th crash gives up.
	starts := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_started" })
	if len(starts) != 4 {
		t.Fatalf("%d workers started, want 4 (the first and 3 restarts)", len(starts))
	}
	restarts := b.Find(faultIs("worker_crashed"))
	if len(restarts) != 3 {
		t.Fatalf("%d restarts logged, want 3", len(restarts))
	}
	var prevDelay time.Duration
	for i, r := range restarts {
		delay, err := time.ParseDuration(r.Str("restart_in"))
		if err != nil || r.Int("crashes") != i+1 {
			t.Fatalf("restart %d: %v", i+1, r)
		}
		// The backoff doubles, and the log's timestamps show that the next
		// worker really started no sooner. (Measured from the crash, not
		// from the failed worker's start: how long a worker takes to fail
		// is its own.)
		gap := faultTime(t, starts[i+1]).Sub(faultTime(t, r))
		t.Logf("crash %d: restart in %s, next worker started %s later", i+1, delay, gap.Round(time.Millisecond))
		if gap < delay {
			t.Fatalf("restart %d came after %s, before its backoff of %s", i+1, gap, delay)
		}
		if i > 0 && delay != 2*prevDelay {
			t.Fatalf("backoff does not double: %s after crash %d, %s after crash %d", prevDelay, i, delay, i+1)
		}
		prevDelay = delay
	}
	gaveUp := b.Find(faultIs("crash_loop"))
	if len(gaveUp) != 1 || gaveUp[0].Int("crashes") != 4 {
		t.Fatalf("want one log line giving up after 4 crashes, got %v", gaveUp)
	}
	out := strings.TrimSpace(b.Output())
	lastLine := out[strings.LastIndexByte(out, '\n')+1:]
	if !strings.HasPrefix(lastLine, "baton: worker crashed 4 times in a row") || !strings.Contains(lastLine, "giving up") {
		t.Fatalf("last line %q, want baton saying it gave up after 4 crashes", lastLine)
	}
	for _, s := range starts {
		if harness.Alive(s.Int("pid")) {
			t.Fatalf("worker %d outlived the master", s.Int("pid"))
		}
	}
}

func faultIs(event string) func(harness.Event) bool {
	return func(e harness.Event) bool { return e.Kind() == event }
}

// faultTook is a reload's duration as logged.
func faultTook(t *testing.T, e harness.Event) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(e.Str("took"))
	if err != nil {
		t.Fatalf("event without a duration: %v", e)
	}
	return d
}

// faultTime is when baton logged e.
func faultTime(t *testing.T, e harness.Event) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, e.Str("time"))
	if err != nil {
		t.Fatalf("event without a time: %v", e)
	}
	return at
}

// faultSettle waits until the master is idle after the last HUP, sent at
// last, as its status says: the last reload to end began after last (so it
// covers that HUP: it started when the HUP arrived, or was the one queued
// behind the reload the HUP arrived during, and nothing was queued after
// it), and one generation serves with nothing starting or draining. It
// returns once the log has been read up to that reload's end, so that
// counting its lines counts them all.
func faultSettle(t *testing.T, b *harness.Baton, last time.Time) {
	t.Helper()
	st := b.WaitState(t, 60*time.Second, "the master idle after the HUPs", func(s upgrader.Status) bool {
		return s.LastReload != nil && s.LastReload.At.After(last) &&
			len(s.Workers) == 1 && s.Workers[0].State == "serving"
	})
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool {
		return e.Kind() == "reload_complete" && e.Int("gen") == st.Generation
	})
}

// faultLiveGroup lists the processes of process group pgid that are not
// zombies. (An orphan killed with the group may stay a zombie of a parent
// that is not baton; it runs nothing and holds nothing.)
func faultLiveGroup(pgid int) []harness.Proc {
	return harness.ProcsWhere(func(p harness.Proc) bool { return p.PGID == pgid && p.State != "Z" })
}

// faultLiveChildren lists parent's children that are not zombies, apart
// from its keeper.
func faultLiveChildren(parent int) []harness.Proc {
	return harness.ProcsWhere(func(p harness.Proc) bool {
		return p.PPID == parent && p.State != "Z" && p.Comm != "baton-keeper"
	})
}

func faultCopyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(fmt.Errorf("install %s: %w", to, err))
	}
}
