package integration_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
)

// Soak: many reloads under POST load (which no client retries). The count
// comes from BATON_SOAK_RELOADS (default 30, so that CI stays quick; the
// README reports a 10,000-reload run). No request may fail, and the master
// must not grow: its open fds are the same at the end as at the start, its
// private memory (RssAnon: most of its RSS is the binary's shared pages)
// is at most 4 MB at the end (without -race, whose runtime is larger) and
// grows after the first tenth of the reloads (its warm-up) by less than
// 1 MB or 50%, it leaves no zombie, and the last tenth of the reloads is
// not slower than the first (mean under 3× plus 20ms).
func TestSoakReloadsUnderLoad(t *testing.T) {
	reloads := soakEnvInt(t, envnames.SoakReloads, 30)
	b, url := startWorker(t, nil)
	master := b.PID()

	// Bounded like every load here: at most 2 minutes plus 1s a reload.
	load, err := loadgen.Start(loadgen.Config{
		URL: url + "/", NewConns: 4, KeepAlive: 4, PostBody: []byte("soak"),
		MaxDuration: 2*time.Minute + time.Duration(reloads)*time.Second,
		MaxRequests: 200000 + 2000*reloads,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })

	startRSS, startFDs := soakAnonKB(t, master), soakFDs(t, master)
	t.Logf("master %d at the start: RssAnon %d kB, %d open fds", master, startRSS, startFDs)
	// The first tenth of the reloads warms the master up (its heap grows to
	// its working size); from then on nothing may grow.
	warmup := max(1, reloads/10)
	var firstRSS, firstFDs int

	began := time.Now()
	took := make([]time.Duration, 0, reloads)
	pid := b.WorkerPID(t, 1)
	for i := 1; i <= reloads; i++ {
		before := load.Done()
		end := b.Reload(t, 30*time.Second)
		if end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i, end)
		}
		took = append(took, faultTook(t, end))
		next := b.WorkerPID(t, end.Int("gen"))
		if next == pid || harness.Alive(pid) {
			t.Fatalf("reload %d: worker %d not replaced by %d, or still running", i, pid, next)
		}
		pid = next
		harness.Eventually(t, 10*time.Second, "requests flowing after the reload",
			func() bool { return load.Done() >= before+50 })
		if failed := load.Failed(); failed > 0 {
			t.Fatalf("reload %d: %d requests failed so far", i, failed)
		}
		if i%10 == 0 {
			requireNoZombies(t, master)
		}
		if i == warmup {
			firstRSS, firstFDs = soakAnonKB(t, master), soakFDs(t, master)
			t.Logf("master %d after %d reloads: RssAnon %d kB, %d open fds", master, i, firstRSS, firstFDs)
		}
	}
	elapsed := time.Since(began)

	lastRSS, lastFDs := soakAnonKB(t, master), soakFDs(t, master)
	t.Logf("master %d after %d reloads: RssAnon %d kB (VmRSS %d kB), %d open fds", master, reloads, lastRSS, soakStatusKB(t, master, "VmRSS"), lastFDs)
	sum := requireNoFailures(t, load)
	// Every reload was checked to replace the worker's PID above; counting
	// distinct PIDs at the end only works while the kernel does not hand
	// one out twice (pid_max is often 32768, and a long soak wraps it).
	if len(sum.PIDs) != reloads+1 && reloads < 1000 {
		t.Errorf("answers came from %d worker pids, want %d", len(sum.PIDs), reloads+1)
	}
	requireNoZombies(t, master)

	k := warmup
	firstMean, lastMean := soakMean(took[:k]), soakMean(took[len(took)-k:])
	t.Logf("%d reloads in %s; reload took: mean of the first %d %s, of the last %d %s, max %s",
		reloads, elapsed.Round(time.Millisecond), k, firstMean, k, lastMean, soakMax(took))

	if lastFDs != startFDs || firstFDs != startFDs {
		t.Errorf("the master's open fds went from %d to %d to %d: %s", startFDs, firstFDs, lastFDs, soakFDList(master))
	}
	if growth := lastRSS - firstRSS; growth >= 1024 && growth*2 >= firstRSS {
		t.Errorf("the master's private memory grew from %d kB after %d reloads to %d kB after %d", firstRSS, warmup, lastRSS, reloads)
	}
	if !harness.RaceEnabled && lastRSS > 4096 {
		t.Errorf("the master's private memory is %d kB after %d reloads, want at most 4096", lastRSS, reloads)
	}
	if lastMean >= 3*firstMean+20*time.Millisecond {
		t.Errorf("reloads slowed down: mean %s at the end against %s at the start", lastMean, firstMean)
	}
}

// An idle master does nothing: no polling loop, no timer ticking. Its CPU
// time (utime+stime) over a window of idleness stays within 2 clock ticks,
// with either readiness: --ready accepting watches a generation only while
// it starts. The window is 2s, or BATON_IDLE_SECONDS (the README reports
// 10s).
func TestIdleMasterUsesNoCPU(t *testing.T) {
	window := time.Duration(soakEnvInt(t, envnames.IdleSeconds, 2)) * time.Second
	for _, tc := range []struct {
		ready  string
		worker []string
	}{{"notify", nil}, {"accepting", []string{"-never-ready"}}} {
		t.Run("ready "+tc.ready, func(t *testing.T) {
			b, url := startWorker(t, []string{"--ready", tc.ready}, tc.worker...)
			get(t, url+"/")
			master := b.PID()
			// Start-up is over once the master's CPU time stops moving for
			// 200ms (the runtime's first GC cycles, the worker's readiness).
			prev, since := soakCPUTicks(t, master), time.Now()
			harness.Eventually(t, 10*time.Second, "the master's start-up work done", func() bool {
				if ticks := soakCPUTicks(t, master); ticks != prev {
					prev, since = ticks, time.Now()
				}
				return time.Since(since) >= 200*time.Millisecond
			})

			before := soakCPUTicks(t, master)
			time.Sleep(window) // the measurement itself: the master is left alone
			used := soakCPUTicks(t, master) - before
			t.Logf("idle master %d (--ready %s) used %d clock ticks of CPU in %s", master, tc.ready, used, window)
			if used > 2 {
				t.Fatalf("an idle master used %d clock ticks of CPU in %s, want at most 2", used, window)
			}
		})
	}
}

func soakEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// soakAnonKB is the private memory of pid (RssAnon), in kB.
func soakAnonKB(t *testing.T, pid int) int {
	t.Helper()
	return soakStatusKB(t, pid, "RssAnon")
}

// soakStatusKB reads a kB field of /proc/PID/status.
func soakStatusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return n
		}
	}
	t.Fatalf("no %s for %d", field, pid)
	return 0
}

func soakFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// soakFDList says what pid's fds are, for a failure report.
func soakFDList(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(dir + "/" + e.Name())
		out = append(out, e.Name()+"→"+target)
	}
	return strings.Join(out, " ")
}

// soakCPUTicks is pid's utime+stime in clock ticks, from /proc/PID/stat.
func soakCPUTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	// Fields after the command name, which may contain spaces: state is
	// field 3 of stat(5), utime 14, stime 15.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, err1 := strconv.Atoi(f[11])
	stime, err2 := strconv.Atoi(f[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("cannot read CPU times from %q", s)
	}
	return utime + stime
}

func soakMean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func soakMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
