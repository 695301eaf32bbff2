package integration_test

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// outputOf returns the worker_output events of worker pid.
func outputOf(b *harness.Baton, pid int) []harness.Event {
	return b.Find(func(e harness.Event) bool { return e.Kind() == "worker_output" && e.Int("pid") == pid })
}

// The user's story: baton logs JSON to a collector, and the server
// prints on stdout and stderr. Every line the server prints arrives as a
// log event saying which worker printed it, on which stream, and nothing
// raw is mixed into baton's JSON.
func TestWorkerOutputIsLogged(t *testing.T) {
	b, _ := startWorker(t, []string{"--workers", "2"}, "-say", "3")
	starts := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_started" && e.Int("gen") == 1 })
	if len(starts) != 2 {
		t.Fatalf("%d workers started, want 2", len(starts))
	}
	for _, s := range starts {
		pid, index := s.Int("pid"), s.Int("index")
		harness.Eventually(t, 10*time.Second, "6 lines of worker "+strconv.Itoa(pid), func() bool { return len(outputOf(b, pid)) >= 6 })
		want := map[string]bool{}
		for i := 1; i <= 3; i++ {
			want[fmt.Sprintf("stdout testworker: stdout line %d pid=%d", i, pid)] = true
			want[fmt.Sprintf("stderr testworker: stderr line %d pid=%d", i, pid)] = true
		}
		for _, e := range outputOf(b, pid) {
			if e.Int("gen") != 1 || e.Int("index") != index || e.Str("level") != "info" || e.Str("time") == "" {
				t.Fatalf("worker %d (index %d): event %v", pid, index, e)
			}
			delete(want, e.Str("stream")+" "+e.Msg())
		}
		if len(want) > 0 {
			t.Fatalf("worker %d: lines not logged: %v", pid, want)
		}
	}
	// Every line baton wrote is JSON: the harness kept the raw text of
	// worker_output events only.
	for _, line := range strings.Split(b.Output(), "\n") {
		if line != "" && !strings.HasPrefix(line, "{") && !strings.HasPrefix(line, "testworker: std") {
			t.Fatalf("a line that is neither JSON nor a logged worker line: %q", line)
		}
	}
	checkOutputPipes(t, b, starts)
	stopCleanly(t, b, starts[0].Int("pid"))
}

// checkOutputPipes proves where the ends of the workers' pipes are: each
// worker's fds 1 and 2 are pipes of its own, whose read ends the master
// and the keeper hold, whose write ends neither holds, and which no other
// worker holds.
func checkOutputPipes(t *testing.T, b *harness.Baton, starts []harness.Event) {
	t.Helper()
	keepers := b.Find(func(e harness.Event) bool { return e.Kind() == "keeper_started" })
	if len(keepers) == 0 {
		t.Fatal("no keeper_started event")
	}
	master, keeper := pipeEnds(t, b.PID()), pipeEnds(t, keepers[len(keepers)-1].Int("pid"))
	for _, s := range starts {
		pid := s.Int("pid")
		mine := pipeEnds(t, pid)
		for _, fd := range []int{1, 2} {
			end, ok := mine[fd]
			if !ok || end.write != true {
				t.Fatalf("worker %d's fd %d is not the write end of a pipe: %+v", pid, fd, mine)
			}
			for who, ends := range map[string]map[int]pipeEnd{"master": master, "keeper": keeper} {
				var read, write int
				for _, e := range ends {
					if e.inode == end.inode {
						if e.write {
							write++
						} else {
							read++
						}
					}
				}
				// The master holds two read ends: its reader's, and the
				// copy it gives a new keeper should the keeper die.
				if read == 0 || write != 0 {
					t.Fatalf("worker %d's fd %d (pipe %s): the %s holds %d read and %d write ends, want read ends only", pid, fd, end.inode, who, read, write)
				}
			}
			for _, other := range starts {
				if other.Int("pid") == pid {
					continue
				}
				for ofd, e := range pipeEnds(t, other.Int("pid")) {
					if e.inode == end.inode {
						t.Fatalf("worker %d's fd %d (pipe %s) leaked into worker %d as fd %d", pid, fd, end.inode, other.Int("pid"), ofd)
					}
				}
			}
		}
	}
}

type pipeEnd struct {
	inode string
	write bool
}

// pipeEnds lists the pipes process pid holds, by fd.
func pipeEnds(t *testing.T, pid int) map[int]pipeEnd {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int]pipeEnd{}
	for _, ent := range ents {
		link, err := os.Readlink(dir + "/" + ent.Name())
		if err != nil || !strings.HasPrefix(link, "pipe:") {
			continue
		}
		fd, _ := strconv.Atoi(ent.Name())
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			continue
		}
		m := regexp.MustCompile(`flags:\s+([0-7]+)`).FindSubmatch(info)
		if m == nil {
			t.Fatalf("no flags in fdinfo: %s", info)
		}
		flags, _ := strconv.ParseInt(string(m[1]), 8, 64)
		ends[fd] = pipeEnd{inode: link, write: flags&3 == 1}
	}
	return ends
}

// --worker-output inherit is what baton did before: the worker writes to
// baton's own stdout and stderr, and baton logs nothing of it.
func TestWorkerOutputInherit(t *testing.T) {
	b, _ := startWorker(t, []string{"--worker-output", "inherit"}, "-say", "2")
	pid := b.WorkerPID(t, 1)
	b.OutputContains(t, 10*time.Second, fmt.Sprintf("testworker: stdout line 2 pid=%d", pid))
	b.OutputContains(t, 10*time.Second, fmt.Sprintf("testworker: stderr line 2 pid=%d", pid))
	if e := b.Find(func(e harness.Event) bool { return strings.HasPrefix(e.Kind(), "worker_output") }); len(e) > 0 {
		t.Fatalf("worker output logged with inherit: %v", e[0])
	}
	for fd, want := range map[int]string{1: "stdout", 2: "stderr"} {
		mine, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		batons, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", b.PID(), fd))
		if mine == "" || mine != batons {
			t.Fatalf("worker's %s is %q, baton's %q: want the same", want, mine, batons)
		}
	}
	stopCleanly(t, b, pid)
}

// On a console, worker lines are prefixed gen/index/pid and the stream.
func TestWorkerOutputConsole(t *testing.T) {
	bin := harness.Build(t)
	b := harness.StartNoWait(t, "--log-format", "console", "--worker-output", "log", "--listen", "http=tcp://127.0.0.1:0",
		"--", bin.TestWorker, "-say", "1")
	re := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3} 1/0/(\d+) err\| testworker: stderr line 1 pid=(\d+)$`)
	harness.Eventually(t, 10*time.Second, "a console line of worker output", func() bool {
		m := re.FindStringSubmatch(b.Output())
		return m != nil && m[1] == m[2]
	})
	if !strings.Contains(b.Output(), " out| testworker: stdout line 1 pid=") {
		t.Fatalf("no stdout line:\n%s", b.Output())
	}
}

// The user's story: a worker logs far more than any collector wants (a
// debug flag left on) while it serves traffic, and baton reloads it.
// Nothing fails, baton's own lines all come out, the worker is never held
// up for long by its output, and what was dropped is counted.
func TestWorkerOutputFloodUnderLoad(t *testing.T) {
	const rate = 20000 // lines a second per worker, 100 bytes each
	b, url := startWorker(t, []string{"--workers", "2"}, "-flood", strconv.Itoa(rate))
	load := startLoad(t, url+"/")
	masterCPU := func() time.Duration { return cpuTime(t, b.PID()) }
	cpu0, t0 := masterCPU(), time.Now()
	time.Sleep(2 * time.Second)
	for i := 1; i <= 2; i++ {
		if end := b.Reload(t, 60*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i, end)
		}
		time.Sleep(time.Second)
	}
	cpu, took := masterCPU()-cpu0, time.Since(t0)
	flooded := get(t, url+"/flooded") // one worker of generation 3
	sum := requireNoFailures(t, load)

	ends := b.Find(func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	if len(ends) != 3 {
		t.Fatalf("%d reload_complete events, want 3 (start and 2 reloads)", len(ends))
	}
	var logged, dropped int
	perWorker := map[int]int{}
	for _, e := range b.Events() {
		switch e.Kind() {
		case "worker_output":
			logged++
			perWorker[e.Int("pid")]++
		case "worker_output_dropped":
			dropped += e.Int("dropped")
		}
	}
	if dropped == 0 {
		t.Fatalf("no worker_output_dropped event, with %d lines a second per worker against a limit of 1000", rate)
	}
	var written, maxWrite string
	if m := regexp.MustCompile(`written=(\d+) maxwrite=(\S+)`).FindStringSubmatch(flooded); m != nil {
		written, maxWrite = m[1], m[2]
	}
	if d, err := time.ParseDuration(maxWrite); err != nil || d > time.Second {
		t.Fatalf("a worker's longest write of its output took %s (%q): want it never held up for long", maxWrite, flooded)
	}
	// baton's own lines all came out: each worker's lifecycle, whole.
	steps, gens := map[int]string{}, map[int]int{}
	var logDropped int
	for _, e := range b.Events() {
		switch e.Kind() {
		case "worker_started", "worker_ready", "draining", "worker_exited":
			steps[e.Int("pid")] += e.Kind() + " "
			gens[e.Int("pid")] = e.Int("gen")
		case "log_dropped":
			logDropped += e.Int("dropped")
		}
	}
	if len(steps) != 6 {
		t.Fatalf("baton logged the steps of %d workers, want 6 (3 generations of 2)", len(steps))
	}
	for pid, got := range steps {
		want := "worker_started worker_ready draining worker_exited "
		if gens[pid] == 3 {
			want = "worker_started worker_ready "
		}
		if got != want {
			t.Fatalf("worker %d: baton logged %q, want %q", pid, got, want)
		}
	}
	t.Logf("%s; %d workers logged %d lines (most by one: %d), %d reported dropped, %d lines lost to the log queue; "+
		"a generation-3 worker wrote %s lines, its longest write %s; master CPU %s in %s (%.1f%%)",
		sum, len(perWorker), logged, maxOf(perWorker), dropped, logDropped, written, maxWrite, cpu.Round(time.Millisecond),
		took.Round(time.Millisecond), 100*cpu.Seconds()/took.Seconds())
	stopCleanly(t, b, b.WorkerPID(t, 3))
}

func maxOf(m map[int]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

// cpuTime is the CPU time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	p, ok := harness.ReadProc(pid)
	if !ok {
		t.Fatalf("no process %d", pid)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// ticks reads the numbers of worker pid's ticks (stdout) or tocks
// (stderr), as logged. The last line may be the first half of one: the
// worker exited between its two writes.
func ticks(t *testing.T, b *harness.Baton, pid int, stream string) []int {
	t.Helper()
	re := regexp.MustCompile(`^testworker: (tick|tock) (\d+) pid=(\d+)$`)
	var ns []int
	var out []harness.Event
	for _, e := range outputOf(b, pid) {
		if e.Str("stream") == stream {
			out = append(out, e)
		}
	}
	for i, e := range out {
		if i == len(out)-1 && (e.Msg() == "testworker: tick " || e.Msg() == "testworker: tock ") {
			break
		}
		m := re.FindStringSubmatch(e.Msg())
		if m == nil || m[3] != strconv.Itoa(pid) {
			t.Fatalf("worker %d: a mangled %s line %q", pid, stream, e.Msg())
		}
		n, _ := strconv.Atoi(m[2])
		ns = append(ns, n)
	}
	return ns
}

// requireEveryTick fails unless ns is 1, 2, … n: no line lost, none
// twice.
func requireEveryTick(t *testing.T, what string, ns []int) {
	t.Helper()
	if !sort.IntsAreSorted(ns) {
		t.Fatalf("%s: out of order: %v", what, ns)
	}
	for i, n := range ns {
		if n != i+1 {
			t.Fatalf("%s: line %d is tick %d: lost or doubled lines in %v", what, i+1, n, ns)
		}
	}
}

// A worker's output is logged across a reload and across `baton
// upgrade`, which hands the pipes to the new image: every line of the
// worker that lives through the upgrade, a half-written one included, is
// logged once, in order, on its own stream.
func TestWorkerOutputAcrossReloadAndUpgrade(t *testing.T) {
	bin := harness.Build(t)
	s := startUpgradable(t, "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker, "-tick", "10ms")
	old := s.b.WorkerPID(t, 1)
	harness.Eventually(t, 10*time.Second, "ticks of generation 1", func() bool { return len(ticks(t, s.b, old, "stdout")) >= 10 })
	if end := s.b.Reload(t, 30*time.Second); end.Kind() != "reload_complete" {
		t.Fatalf("reload: %v", end)
	}
	pid := s.b.WorkerPID(t, 2)
	harness.Eventually(t, 10*time.Second, "ticks of generation 2", func() bool { return len(ticks(t, s.b, pid, "stdout")) >= 10 })
	for i := range 3 {
		code, stdout, stderr := s.upgrade(t, []string{s.new, s.old, s.new}[i])
		if code != 0 {
			t.Fatalf("baton upgrade --wait: exit %d, %q %q", code, stdout, stderr)
		}
		n := len(ticks(t, s.b, pid, "stdout"))
		harness.Eventually(t, 10*time.Second, "ticks after the upgrade", func() bool { return len(ticks(t, s.b, pid, "stdout")) >= n+10 })
	}
	st := s.b.State(t)
	if st.WorkerPID != pid || !strings.Contains(st.Version, "upgrade-new") {
		t.Fatalf("after the upgrades: %+v", st)
	}
	if n := len(s.b.Find(func(e harness.Event) bool { return e.Kind() == "upgraded" })); n != 3 {
		t.Fatalf("%d upgraded events, want 3", n)
	}
	stopCleanly(t, s.b, pid)
	for _, p := range []int{old, pid} {
		for _, stream := range []string{"stdout", "stderr"} {
			ns := ticks(t, s.b, p, stream)
			requireEveryTick(t, fmt.Sprintf("worker %d's %s", p, stream), ns)
			t.Logf("worker %d: %d lines on %s, none lost or doubled", p, len(ns), stream)
		}
	}
	// How long the worker's lines waited in its pipe while the master
	// executed its new image: the longest gap between two of its lines.
	var prev time.Time
	var gap time.Duration
	for _, e := range outputOf(s.b, pid) {
		at, err := time.Parse(time.RFC3339Nano, e.Str("time"))
		if err != nil {
			t.Fatalf("event time %q: %v", e.Str("time"), err)
		}
		if !prev.IsZero() {
			gap = max(gap, at.Sub(prev))
		}
		prev = at
	}
	t.Logf("longest gap between two logged lines of worker %d, 3 upgrades included: %s", pid, gap.Round(time.Millisecond))
}

// The user's story: the master is SIGKILLed (an OOM kill, a supervisor's
// kill -9). Its workers drain, and go on writing while they do: the keeper
// reads their pipes, so no worker dies of SIGPIPE at its next line, and
// what they write is still logged, by the keeper.
func TestWorkerOutputAfterTheMasterIsKilled(t *testing.T) {
	b, _ := startWorker(t, []string{"--drain-timeout", "20s"}, "-say-on-drain", "25")
	pid := b.WorkerPID(t, 1)
	b.Signal(t, syscall.SIGKILL)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "keeper_released" })
	var drained []string
	clean := false
	for _, e := range outputOf(b, pid) {
		if e.Str("process") != "keeper" {
			t.Fatalf("a line logged by no keeper after the master was killed: %v", e)
		}
		if e.Int("gen") != 1 || e.Int("index") != 0 || e.Str("stream") != "stderr" {
			t.Fatalf("event %v", e)
		}
		switch {
		case strings.HasPrefix(e.Msg(), "testworker: draining line "):
			drained = append(drained, e.Msg())
		case strings.HasPrefix(e.Msg(), "testworker: exiting cleanly"):
			clean = true
		}
	}
	if len(drained) != 25 || !clean {
		t.Fatalf("logged %d of the 25 lines the worker wrote while it drained, exit line %v:\n%s", len(drained), clean, b.Output())
	}
	if harness.Alive(pid) {
		t.Fatalf("worker %d outlived the keeper", pid)
	}
}

// A worker that closes its stdout, and a shell wrapper whose lines come
// before the server's: what is written is logged, the closed stream ends
// quietly, and the worker serves on.
func TestWorkerOutputClosedStdout(t *testing.T) {
	bin := harness.Build(t)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", "sh", "-c",
		`echo "wrapper on stdout"; exec 1>&-; echo "wrapper on stderr, stdout closed" >&2; exec "$0"`, bin.TestWorker)
	pid := b.WorkerPID(t, 1)
	harness.Eventually(t, 10*time.Second, "the wrapper's lines", func() bool { return len(outputOf(b, pid)) == 2 })
	got := map[string]string{}
	for _, e := range outputOf(b, pid) {
		got[e.Msg()] = e.Str("stream")
	}
	if got["wrapper on stdout"] != "stdout" || got["wrapper on stderr, stdout closed"] != "stderr" {
		t.Fatalf("lines %v", got)
	}
	if body := get(t, "http://"+b.Addr(t, "http")+"/"); !strings.Contains(body, "pid="+strconv.Itoa(pid)) {
		t.Fatalf("the worker does not serve: %q", body)
	}
	stopCleanly(t, b, pid)
}

// A worker run as another user (--user) owns its pipes, as it would a
// pipe it made: it can open /dev/stdout and /dev/stderr, as servers
// configured to log there do (nginx's error_log /dev/stderr).
func TestWorkerOutputAsUser(t *testing.T) {
	needRoot(t)
	b := harness.StartWith(t, harness.Setup{Baton: batonForAll(t)}, "--user", "nobody", "--dir", appDir(t), "--ready", "delay=100ms", "--", "sh", "-c",
		`echo "opened /dev/stdout" > /dev/stdout && echo "opened /dev/stderr" > /dev/stderr; exec sleep 60`)
	pid := b.WorkerPID(t, 1)
	harness.Eventually(t, 10*time.Second, "two lines", func() bool { return len(outputOf(b, pid)) >= 2 })
	defer stopCleanly(t, b, pid)
	got := map[string]string{}
	for _, e := range outputOf(b, pid) {
		got[e.Msg()] = e.Str("stream")
	}
	if got["opened /dev/stdout"] != "stdout" || got["opened /dev/stderr"] != "stderr" {
		t.Fatalf("lines %v", got)
	}
}
