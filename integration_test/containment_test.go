package integration_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/internal/harness"
)

// Containment: nothing baton starts outlives the master by more than
// --drain-timeout, whatever ended the master, and nothing a worker starts
// escapes it. Every test marks the master's environment with a value of
// its own, which everything baton starts inherits, and looks for that
// value in /proc to find what is left, wherever it was re-parented.

// containDrain is the drain timeout of these tests; containMargin is how
// much later than it everything must be gone (detection, SIGKILL taking
// effect, the race detector, a busy machine).
const (
	containDrain  = 2 * time.Second
	containMargin = 2 * time.Second
)

// The master is SIGKILLed while its worker ignores the drain signal (and
// keeps a grandchild in its process group): the keeper SIGKILLs them at the
// drain timeout, and a new baton can bind the port.
// The master's signals, when they reach its whole process group or unit
// (a terminal's ^C or ^\, `systemctl kill --signal=TTIN` without
// --kill-whom=main), leave the keeper as it was: it ignores them, so TTIN
// does not stop it nor USR1 end it, and a SIGKILLed master is still
// cleaned up after.
func TestContainmentKeeperIgnoresTheMastersSignals(t *testing.T) {
	b, _ := startWorker(t, nil)
	keeper := harness.WaitProc(t, 10*time.Second, "the keeper", func(p harness.Proc) bool {
		return p.PPID == b.PID() && p.Comm == "baton-keeper"
	})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", keeper.PID))
	if err != nil {
		t.Fatal(err)
	}
	var ignored uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:\t"); ok {
			ignored, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGTSTP}
	for _, sig := range sigs {
		if ignored&(1<<(sig-1)) == 0 {
			t.Errorf("the keeper does not ignore %v (SigIgn %x)", sig, ignored)
		}
		syscall.Kill(keeper.PID, sig)
	}
	worker := b.State(t).WorkerPID
	if p, ok := harness.ReadProc(keeper.PID); !ok || p.State == "T" || p.PPID != b.PID() {
		t.Fatalf("the keeper after the master's signals: %+v, alive %v; want it running as before", p, ok)
	}
	b.Signal(t, syscall.SIGKILL)
	b.Wait(t, 10*time.Second)
	harness.WaitGone(t, 10*time.Second, "the worker and the keeper", worker, keeper.PID)
}

func TestContainmentMasterKilledWorkerIgnoresDrain(t *testing.T) {
	b, mark := containStart(t, "-ignore-drain", "-orphan")
	addr := b.Addr(t, "http")
	worker := b.WorkerPID(t, 1)
	harness.Eventually(t, 10*time.Second, "the worker's grandchild running in its process group", func() bool {
		return len(faultLiveGroup(worker)) >= 2
	})
	t.Logf("left running by baton: %v", containLive(mark))

	killed := containKillMaster(t, b.PID())
	gone := containAllGone(t, mark, killed)
	if gone < containDrain-200*time.Millisecond {
		t.Fatalf("everything was gone %s after the master, before the drain timeout (%s): the worker ignores the drain signal", gone, containDrain)
	}
	containBindable(t, addr)
	b.WaitFor(t, 5*time.Second, func(e harness.Event) bool {
		return e.Kind() == "keeper_killed" && e.Int("processes") >= 2
	})
}

// A worker that drains on its own still answers its request in flight
// after the master is SIGKILLed, and then nothing is left.
func TestContainmentMasterKilledWorkerFinishesItsRequest(t *testing.T) {
	b, mark := containStart(t)
	addr := b.Addr(t, "http")
	slow := harness.GetInBackground("http://" + addr + "/slow?d=1500ms")
	b.OutputContains(t, 10*time.Second, "slow request started")

	killed := containKillMaster(t, b.PID())
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("the request in flight when the master was killed: %q %v", a.Body, a.Err)
	}
	containAllGone(t, mark, killed)
	containBindable(t, addr)
}

// The master is SIGKILLed while nobody reads baton's log (a collector that
// stalled: the stderr pipe is full, filled by a worker's output) and the
// worker ignores the drain signal: the keeper cannot write a line, yet it
// kills the worker at the drain timeout.
func TestContainmentMasterKilledLogStalled(t *testing.T) {
	r, w := logPipe(t)
	mark := containMark(t)
	d := harness.StartDetached(t, w, []string{mark}, "--listen", "http=tcp://127.0.0.1:0",
		"--drain-timeout", containDrain.String(), "--worker-output", "log",
		"--", harness.Build(t).TestWorker, "-ignore-drain", "-flood", "1000")
	w.Close()
	newLogReader(r).until(t, 20*time.Second, "generation 1 serving", func(e harness.Event) bool {
		return e.Kind() == "reload_complete" && e.Int("gen") == 1
	})
	// From here on nobody reads: the worker's lines fill the pipe.
	harness.Eventually(t, 10*time.Second, "baton's log pipe full", func() bool {
		n, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ)
		return err == nil && n >= 3<<10 // a line more does not fit
	})

	killed := containKillMaster(t, d.PID())
	containAllGone(t, mark, killed)
}

// The master is SIGKILLed while a process in a session of its own
// (setsid) ignores the drain signal, the child of a worker that drains at
// once or of an on-ready hook: its parent exits in the same moment as the
// master (the worker on its parent-death signal, the hook killed by its
// own), before the keeper can see whose child it was. The keeper finds it
// by the master's PID in its environment: a worker's is drained and
// killed at the drain timeout, a hook's is killed at once.
func TestContainmentMasterKilledSessionLeftBehind(t *testing.T) {
	const session = `setsid sh -c 'trap "" TERM; exec sleep 300' &`
	for _, tc := range []struct {
		name   string
		hook   bool
		sleeps int           // the sleeps running once it is all set up
		within time.Duration // everything gone this long after the master
	}{
		{"worker", false, 1, containDrain + containMargin},
		{"hook", true, 2, containDrain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			worker := []string{harness.Build(t).TestWorker}
			var flags []string
			if tc.hook {
				hook := filepath.Join(dir, "on-ready")
				hardScript(t, hook, "trap '' TERM\n"+session+"\nexec sleep 300")
				flags = []string{"--on-ready", hook, "--hook-timeout", "60s"}
			} else {
				wrapper := filepath.Join(dir, "worker")
				hardScript(t, wrapper, session+"\nexec "+worker[0])
				worker = []string{wrapper}
			}
			b, mark := containStartWith(t, flags, worker...)
			harness.Eventually(t, 10*time.Second, "the process in a session of its own running", func() bool {
				return len(hardLiveComm(mark, "sleep")) == tc.sleeps
			})
			t.Logf("left running by baton: %v", containLive(mark))

			killed := containKillMaster(t, b.PID())
			if took := containAllGone(t, mark, killed); took > tc.within {
				t.Fatalf("everything was gone %s after the master, want within %s", took, tc.within)
			}
		})
	}
}

// The keeper SIGKILLed while the master runs is started again, knows the
// worker, and does its job when the master is SIGKILLed in turn.
func TestContainmentKeeperKilledIsRestarted(t *testing.T) {
	b, mark := containStart(t, "-ignore-drain", "-orphan")
	addr := b.Addr(t, "http")
	first := containKeeper(t, b)
	containSignal(t, first, syscall.SIGKILL)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool {
		return e.Kind() == "keeper_exited" && e.Int("pid") == first.pid
	})
	second := containKeeper(t, b)
	if second.pid == first.pid {
		t.Fatalf("no new keeper after keeper %d was killed", first.pid)
	}
	if p, ok := harness.ReadProc(second.pid); !ok || p.PPID != b.PID() || p.Comm != "baton-keeper" {
		t.Fatalf("the new keeper %d: %+v, want a child of the master %d named baton-keeper", second.pid, p, b.PID())
	}

	killed := containKillMaster(t, b.PID())
	containAllGone(t, mark, killed)
	containBindable(t, addr)
}

// A worker that daemonizes (fork, setsid, fork, exit 0) fails its reload
// with a reason saying so; the daemon, left accepting on the shared
// socket, is drained and SIGKILLed after the drain timeout; TERM then
// leaves nothing behind.
func TestContainmentWorkerDaemonizes(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker)
	b, mark := containStartCommand(t, app)
	addr := b.Addr(t, "http")
	serving := b.WorkerPID(t, 1)

	harness.Deploy(t, app, bin.TestWorker, "-daemonize", "-ignore-drain")
	end := b.Reload(t, 20*time.Second)
	failedAt := faultTime(t, end)
	msg := end.Str("error")
	t.Logf("reload: %s", msg)
	if end.Kind() != "reload_failed" || !strings.Contains(msg, "daemonized") || !strings.Contains(msg, "generation 1 is still serving") {
		t.Fatalf("want the reload to fail saying the worker daemonized, got %v", end)
	}
	b.WaitFor(t, 5*time.Second, func(e harness.Event) bool {
		return e.Kind() == "worker_daemonized" && e.Int("gen") == 2
	})
	if n := len(b.Find(func(e harness.Event) bool { return e.Kind() == "worker_daemonized" })); n != 1 {
		t.Fatalf("the worker daemonized was logged %d times, want once", n)
	}
	// The daemon did run, detached from the worker's process group.
	b.OutputContains(t, 10*time.Second, "testworker: daemon serving")
	harness.Eventually(t, containDrain+containMargin, "generation 2's daemon gone", func() bool {
		return len(containGen(mark, 2)) == 0
	})
	took := time.Since(failedAt)
	t.Logf("generation 2's daemon was gone %s after the failed reload", took.Round(time.Millisecond))
	if took > containDrain+containMargin {
		t.Fatalf("generation 2's processes were gone %s after the failed reload, want within %s", took, containDrain+containMargin)
	}
	b.WaitFor(t, 5*time.Second, func(e harness.Event) bool {
		return e.Kind() == "stray_killed" && e.Int("gen") == 2
	})
	if body := get(t, "http://"+addr+"/"); !strings.Contains(body, "pid="+strconv.Itoa(serving)) {
		t.Fatalf("after the failed reload, answered by %q, want generation 1 (pid %d)", body, serving)
	}
	harness.Eventually(t, 5*time.Second, "the daemon reaped", func() bool { return len(harness.Zombies(b.PID())) == 0 })

	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
	if left := containLive(mark); len(left) > 0 {
		t.Fatalf("left running after baton's exit: %+v", left)
	}
	containBindable(t, addr)
}

// A stop does not hang on a SIGSTOPped keeper or worker: the drain signal
// waits in vain, SIGKILL after the drain timeout does not, and the master
// exits 0 with nothing left.
func TestContainmentStopWithAProcessStopped(t *testing.T) {
	for _, tc := range []struct {
		name string
		pick func(*testing.T, *harness.Baton) containProc
	}{
		{"keeper", containKeeper},
		{"worker", func(t *testing.T, b *harness.Baton) containProc { return containOpen(t, b.WorkerPID(t, 1)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, mark := containStart(t)
			p := tc.pick(t, b)
			containSignal(t, p, syscall.SIGSTOP)
			t.Cleanup(func() { containSignal(t, p, syscall.SIGCONT) })

			containStop(t, b, mark)
			if !p.exited() {
				t.Fatalf("the stopped %s %d outlived the master", tc.name, p.pid)
			}
		})
	}
}

// The keeper costs nothing while it waits: no CPU, about a megabyte of
// anonymous memory.
func TestContainmentKeeperIsIdle(t *testing.T) {
	b, _ := containStart(t)
	k := containKeeper(t, b)
	before := soakCPUTicks(t, k.pid)
	time.Sleep(2 * time.Second) // the measurement: the keeper is left alone
	used := soakCPUTicks(t, k.pid) - before
	t.Logf("keeper %d: %d clock ticks of CPU in 2s idle; %s", k.pid, used, containStatus(t, k.pid, "RssAnon"))
	if used > 1 {
		t.Fatalf("an idle keeper used %d clock ticks of CPU in 2s, want at most 1", used)
	}
}

// containStart starts baton over the test worker with workerFlags, marked.
func containStart(t *testing.T, workerFlags ...string) (*harness.Baton, string) {
	t.Helper()
	return containStartCommand(t, append([]string{harness.Build(t).TestWorker}, workerFlags...)...)
}

// containStartCommand starts baton with the drain timeout of these tests
// over command, with a mark of the test's own in its environment, and
// returns once the first generation serves.
func containStartCommand(t *testing.T, command ...string) (*harness.Baton, string) {
	t.Helper()
	return containStartWith(t, nil, command...)
}

// containStartWith is containStartCommand with more of baton's flags.
func containStartWith(t *testing.T, flags []string, command ...string) (*harness.Baton, string) {
	t.Helper()
	mark := containMark(t)
	args := append([]string{"--listen", "http=tcp://127.0.0.1:0", "--drain-timeout", containDrain.String()}, flags...)
	args = append(append(args, "--"), command...)
	b := harness.StartWith(t, harness.Setup{Env: []string{mark}}, args...)
	// Before baton's own clean-up, which waits for its output to end: a
	// test that fails because something outlived the master ends it here.
	t.Cleanup(func() {
		if t.Failed() && harness.Alive(b.PID()) {
			b.Signal(t, syscall.SIGQUIT)
			harness.WaitGone(t, 10*time.Second, "baton after QUIT", b.PID())
		}
		if !harness.Alive(b.PID()) {
			containSweep(t, mark)
		}
	})
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 1 })
	return b, mark
}

func containMark(t *testing.T) string {
	mark := fmt.Sprintf("BATON_CONTAIN_TEST=%s-%d-%d", t.Name(), os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { containSweep(t, mark) })
	return mark
}

// containSweep SIGKILLs every live process that holds mark, through a
// pidfd opened before its mark is checked again.
func containSweep(t *testing.T, mark string) {
	for _, p := range containLive(mark) {
		fd, err := unix.PidfdOpen(p.PID, 0)
		if err != nil {
			continue
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
		if bytes.Contains(append(append([]byte{0}, env...), 0), []byte("\x00"+mark+"\x00")) {
			t.Logf("killing %+v, left running by baton", p)
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		}
		unix.Close(fd)
	}
}

// containLive lists the live processes whose environment holds mark.
func containLive(mark string) []harness.Proc {
	return containWhere(mark, func([]byte) bool { return true })
}

// containGen lists the live processes of generation gen that hold mark.
func containGen(mark string, gen int) []harness.Proc {
	want := []byte("\x00BATON_GENERATION=" + strconv.Itoa(gen) + "\x00")
	return containWhere(mark, func(env []byte) bool { return bytes.Contains(env, want) })
}

func containWhere(mark string, match func(env []byte) bool) []harness.Proc {
	return harness.ProcsWhere(func(p harness.Proc) bool {
		if p.State == "Z" {
			return false
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
		if err != nil {
			return false
		}
		env = append(append([]byte{0}, env...), 0)
		return bytes.Contains(env, []byte("\x00"+mark+"\x00")) && match(env)
	})
}

// containKillMaster SIGKILLs the master and returns when.
func containKillMaster(t *testing.T, master int) time.Time {
	t.Helper()
	if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// containAllGone waits until no process holding mark is alive, at most the
// drain timeout and the margin after since, and returns how long it took.
func containAllGone(t *testing.T, mark string, since time.Time) time.Duration {
	t.Helper()
	var left []harness.Proc
	harness.Eventually(t, time.Until(since.Add(containDrain+containMargin)), "every process baton started gone", func() bool {
		left = containLive(mark)
		return len(left) == 0
	})
	took := time.Since(since)
	t.Logf("the last process baton started was gone %s after the master was killed", took.Round(time.Millisecond))
	return took
}

// containBindable requires that addr can be bound.
func containBindable(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s cannot be bound after baton is gone: %v", addr, err)
	}
	l.Close()
}

// containStop sends TERM and requires exit 0 within the drain timeout and
// the margin, with nothing left.
func containStop(t *testing.T, b *harness.Baton, mark string) {
	t.Helper()
	start := time.Now()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, containDrain+containMargin+5*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
	took := time.Since(start)
	t.Logf("baton exited %s after TERM", took.Round(time.Millisecond))
	if took > containDrain+containMargin {
		t.Fatalf("baton took %s to stop, want at most %s", took, containDrain+containMargin)
	}
	if left := containLive(mark); len(left) > 0 {
		t.Fatalf("left running after baton's exit: %+v", left)
	}
}

// containProc is a process the test holds a pidfd on, so that it never
// signals a stranger that got the same PID.
type containProc struct {
	pid, fd int
}

func containOpen(t *testing.T, pid int) containProc {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return containProc{pid, fd}
}

func containSignal(t *testing.T, p containProc, sig syscall.Signal) {
	t.Helper()
	if err := unix.PidfdSendSignal(p.fd, sig, nil, 0); err != nil && err != unix.ESRCH {
		t.Fatalf("signal %d: %v", p.pid, err)
	}
}

// exited reports whether the process has exited.
func (p containProc) exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n == 1
}

// containKeeper is the master's latest keeper.
func containKeeper(t *testing.T, b *harness.Baton) containProc {
	t.Helper()
	var pid int
	harness.Eventually(t, 10*time.Second, "a keeper running", func() bool {
		started := b.Find(func(e harness.Event) bool { return e.Kind() == "keeper_started" })
		if len(started) == 0 {
			return false
		}
		pid = started[len(started)-1].Int("pid")
		p, ok := harness.ReadProc(pid)
		return ok && p.PPID == b.PID() && p.Comm == "baton-keeper"
	})
	return containOpen(t, pid)
}

func containStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return field + " unknown"
}
