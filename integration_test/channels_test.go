package integration_test

// Every input and output channel of the master, broken the ways they
// break in production: the log's reader gone or stalled, the service
// manager no longer reading its notify socket, a /tmp cleaner, two
// masters on one pidfile, a stale pidfile whose PID was reused, no file
// descriptor left, an oversized control request, a wedged or dead master
// under `reload --wait`.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-sh/baton/control"
	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/notify"
	"github.com/baton-sh/baton/pidfile"
)

// logPipe is a pipe for baton's stderr, as small as a pipe gets (one
// page), so that a reader that stops reading stalls the writer soon.
func logPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 4096); err != nil {
		t.Fatalf("F_SETPIPE_SZ: %v", err)
	}
	return r, w
}

// logReader reads baton's JSON log lines from a pipe, for as long as the
// test wants to be its reader.
type logReader struct {
	sc *bufio.Scanner
}

func newLogReader(r io.Reader) *logReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &logReader{sc: sc}
}

// until reads lines until one holds an event that match accepts, and
// returns that event; it fails the test after limit.
func (l *logReader) until(t *testing.T, limit time.Duration, what string, match func(harness.Event) bool) harness.Event {
	t.Helper()
	found := make(chan harness.Event, 1)
	go func() {
		defer close(found)
		for l.sc.Scan() {
			line := l.sc.Bytes()
			i := strings.Index(string(line), `{"level":`)
			if i < 0 {
				continue
			}
			var e harness.Event
			if json.Unmarshal(line[i:], &e) == nil && match(e) {
				found <- e
				return
			}
		}
	}()
	select {
	case e, ok := <-found:
		if !ok {
			t.Fatalf("baton's log ended before %s", what)
		}
		return e
	case <-time.After(limit):
		t.Fatalf("no %s in baton's log within %s", what, limit)
	}
	return nil
}

// reloadWait runs `baton reload --wait` against the master holding
// pidfile and requires success.
func reloadWait(t *testing.T, pidfile string, i int) {
	t.Helper()
	code, stdout, stderr := harness.Run(t, 40*time.Second, "reload", "--wait", "--timeout", "30s", "--pidfile", pidfile)
	if code != 0 || !strings.HasPrefix(stdout, "reloaded: generation ") {
		t.Fatalf("reload %d: exit %d, stdout %q, stderr %q", i, code, stdout, stderr)
	}
}

// metric scrapes one sample from the admin endpoint at addr.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	body := get(t, "http://"+addr+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("metric %s not exported:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// requireCleanExit checks what a clean exit leaves: exit 0, and neither
// the pidfile nor the control socket.
func requireCleanExit(t *testing.T, b *harness.Detached, limit time.Duration) {
	t.Helper()
	b.Cmd.Process.Signal(syscall.SIGTERM)
	if how := b.Wait(t, limit); how != "exit status 0" {
		t.Fatalf("baton after TERM: %s, want exit status 0", how)
	}
	for _, path := range []string{b.PIDFile, b.Control} {
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s left behind after a clean exit (%v)", path, err)
		}
	}
}

// The log's reader dies (`baton … 2>&1 | head -1`, a log collector
// restarting): baton's next log line meets a broken pipe. It must neither
// die of SIGPIPE nor take its workers, pidfile and sockets down with it.
func TestLogReaderGone(t *testing.T) {
	bin := harness.Build(t)
	r, w := logPipe(t)
	b := harness.StartDetached(t, w, nil, "--listen", "http=tcp://127.0.0.1:0", "--admin", "127.0.0.1:0", "--", bin.TestWorker)
	w.Close()
	log := newLogReader(r)
	admin := log.until(t, 20*time.Second, "admin endpoint", func(e harness.Event) bool { return e.Kind() == "admin_listening" }).Str("addr")
	log.until(t, 20*time.Second, "generation 1 serving", func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	r.Close() // the reader is gone for good

	for i := 1; i <= 3; i++ {
		reloadWait(t, b.PIDFile, i)
	}
	st := b.WaitServing(t, 10*time.Second, 4)
	if b.Exited() || !harness.Alive(st.WorkerPID) {
		t.Fatalf("after the log's reader left: master exited %v, worker %d alive %v", b.Exited(), st.WorkerPID, harness.Alive(st.WorkerPID))
	}
	if n := metric(t, admin, "baton_log_lines_dropped_total"); n < 10 {
		t.Errorf("baton_log_lines_dropped_total = %v after 3 reloads into a broken pipe, want every line since counted", n)
	}
	requireCleanExit(t, b, 30*time.Second)
}

// The log's reader stalls (its pipe is full): baton's lifecycle must not
// wait for it. Reloads, status and TERM go on; lines are dropped and
// counted; when the reader is back, one line says how many it missed.
func TestLogReaderStalls(t *testing.T) {
	bin := harness.Build(t)
	r, w := logPipe(t)
	// Each worker's status line is logged (cut to 512 bytes): a reload
	// logs about 2.5 KB.
	b := harness.StartDetached(t, w, nil, "--listen", "http=tcp://127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--", bin.TestWorker, "-status", strings.Repeat("s", 3000))
	w.Close()
	log := newLogReader(r)
	admin := log.until(t, 20*time.Second, "admin endpoint", func(e harness.Event) bool { return e.Kind() == "admin_listening" }).Str("addr")
	log.until(t, 20*time.Second, "generation 1 serving", func(e harness.Event) bool { return e.Kind() == "reload_complete" })

	// Nobody reads now. Reload until lines are dropped: the pipe is full
	// after two reloads, baton's queue after some 100.
	var (
		reloads int
		dropped float64
	)
	for dropped == 0 {
		if reloads >= 400 {
			t.Fatalf("no log line dropped after %d reloads into a stalled 4 KiB pipe", reloads)
		}
		for range 10 {
			reloads++
			reloadWait(t, b.PIDFile, reloads)
		}
		dropped = metric(t, admin, "baton_log_lines_dropped_total")
	}
	code, stdout, stderr := harness.Run(t, 15*time.Second, "status", "--pidfile", b.PIDFile)
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("serving      generation %d", reloads+1)) {
		t.Fatalf("status with the log stalled: exit %d, %q %q", code, stdout, stderr)
	}

	// The reader is back: the lines queued come first, then the notice.
	notice := log.until(t, 20*time.Second, "drop notice", func(e harness.Event) bool {
		return e.Kind() == "log_dropped"
	})
	if notice.Str("level") != "warn" || notice.Int("dropped") <= 0 || float64(notice.Int("dropped")) > dropped {
		t.Fatalf("drop notice %v, want a warning with the count (at most %v, the metric)", notice, dropped)
	}
	t.Logf("%d reloads with the log stalled: %v lines dropped; notice: %v", reloads, dropped, notice)

	// Stalled again (nobody reads after the notice, and what is still
	// queued fills the pipe), TERM still stops baton within the drain time plus
	// the log's bounded flush.
	for i := 1; i <= 5; i++ {
		reloadWait(t, b.PIDFile, reloads+i)
	}
	requireCleanExit(t, b, 15*time.Second)
}

// Under systemd, baton reports to the manager's notify socket, whose queue
// holds a handful of datagrams. A manager that stops reading must cost
// messages, not freeze the master.
func TestServiceManagerStopsReading(t *testing.T) {
	manager, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer manager.Close() // never read
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Env: []string{"NOTIFY_SOCKET=" + manager.Path()}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" })

	// Each reload sends two messages; the queue (net.unix.max_dgram_qlen,
	// 10 by default) is full after a few.
	for i := 1; i <= 12; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i, end)
		}
	}
	warn := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "service_notify_failed" })
	if !strings.Contains(warn.Str("error"), "message dropped") {
		t.Errorf("warning %v does not say that the message was dropped", warn)
	}
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
}

// systemd's watchdog watches the unit's main process; when that is not
// baton (a shell that did not exec it), baton cannot feed it, and the
// unit would be restarted at every WatchdogSec= with nothing saying why:
// baton says so at start.
func TestServiceWatchdogOfAnotherProcess(t *testing.T) {
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Env: []string{"WATCHDOG_USEC=1000000", "WATCHDOG_PID=1"}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	w := b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "service_watchdog_not_ours" })
	if w.Str("watchdog_pid") != "1" {
		t.Fatalf("warning %v, want watchdog_pid 1", w)
	}
}

// A /tmp cleaner, or a TMPDIR too long for a socket address, must not
// matter: baton's private NOTIFY_SOCKET is a file in TMPDIR, made anew at
// the next start when a cleaner has deleted it, and abstract where no path
// fits.
func TestNotifySocketSurvivesACleaner(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100), strings.Repeat("e", 100))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		tmpdir   string
		clean    bool
		abstract bool
	}{
		{"tmp cleaner", t.TempDir(), true, false},
		{"TMPDIR longer than a socket address", long, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := harness.Build(t)
			b := harness.StartWith(t, harness.Setup{Env: []string{"TMPDIR=" + tc.tmpdir, "XDG_RUNTIME_DIR=", "RUNTIME_DIRECTORY="}},
				"--listen", "http=tcp://127.0.0.1:0", "--ready-timeout", "5s", "--", bin.TestWorker)
			b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 1 })
			worker := b.WorkerPID(t, 1)
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", worker))
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile("(?:^|\x00)NOTIFY_SOCKET=([^\x00]*)").FindSubmatch(env)
			switch {
			case m == nil:
				t.Fatal("worker has no NOTIFY_SOCKET")
			case tc.abstract && !strings.HasPrefix(string(m[1]), "@"):
				t.Errorf("worker's NOTIFY_SOCKET %q, want an abstract socket (@…)", m[1])
			case !tc.abstract && !strings.HasPrefix(string(m[1]), tc.tmpdir+"/baton-"):
				t.Errorf("worker's NOTIFY_SOCKET %q, want a file under %s", m[1], tc.tmpdir)
			}
			if tc.clean {
				entries, _ := os.ReadDir(tc.tmpdir)
				for _, e := range entries {
					os.RemoveAll(filepath.Join(tc.tmpdir, e.Name()))
				}
			}
			if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
				t.Fatalf("reload after the cleaner: %v", end)
			}
			// A crash restart needs the socket too.
			syscall.Kill(b.WorkerPID(t, 2), syscall.SIGKILL)
			b.WaitFor(t, 20*time.Second, func(e harness.Event) bool {
				return e.Kind() == "reload_complete" && e.Str("trigger") == "crash" && e.Int("gen") == 2
			})
			stopCleanly(t, b, b.State(t).WorkerPID)
		})
	}
}

// Two masters on one pidfile: the second is refused with exit 3, whatever
// its binary is called, and the running master's pidfile is untouched.
func TestSecondMasterOnAHeldPidfile(t *testing.T) {
	bin := harness.Build(t)
	a, url := startWorker(t, nil)
	renamed := filepath.Join(t.TempDir(), "baton-1.3")
	if err := os.Link(bin.Baton, renamed); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(renamed, "--pidfile", a.PIDFile, "--listen", "http=tcp://"+a.Addr(t, "http"), "--", bin.TestWorker)
	cmd.Env = append(os.Environ(), harness.ProcessEnv...)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("second master: %v, want exit 3\n%s", err, out)
	}
	last := lastLine(string(out))
	if !strings.HasPrefix(last, "baton: pidfile ") || !strings.Contains(last, fmt.Sprintf("held by running baton master pid %d", a.PID())) {
		t.Errorf("second master's last line %q, want it to name the master holding the pidfile", last)
	}
	if pid, err := pidfile.Holder(a.PIDFile); err != nil || pid != a.PID() {
		t.Fatalf("after the refused start, the pidfile's holder is %d (%v), want the running master %d", pid, err, a.PID())
	}
	if body := get(t, url); !strings.Contains(body, "gen=1") {
		t.Fatalf("running master's worker: %q", body)
	}
	stopCleanly(t, a, a.WorkerPID(t, 1))
	if _, err := os.Lstat(a.PIDFile); !os.IsNotExist(err) {
		t.Errorf("pidfile left after the master's clean exit: %v", err)
	}
}

// Masters started at the same moment on one pidfile: exactly one runs.
func TestMastersStartedTogetherOnOnePidfile(t *testing.T) {
	bin := harness.Build(t)
	shared := filepath.Join(t.TempDir(), "app.pid")
	const n = 4
	var masters []*harness.Detached
	for range n {
		masters = append(masters, harness.StartDetached(t, nil, nil,
			"--pidfile", shared, "--control", filepath.Join(t.TempDir(), "c.sock"),
			"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker))
	}
	harness.Eventually(t, 30*time.Second, fmt.Sprintf("%d of %d masters exited", n-1, n), func() bool {
		exited := 0
		for _, m := range masters {
			if m.Exited() {
				exited++
			}
		}
		return exited >= n-1
	})
	var running *harness.Detached
	for _, m := range masters {
		if !m.Exited() {
			running = m
			continue
		}
		if how := m.Wait(t, time.Second); how != "exit status 3" {
			t.Errorf("refused master %d: %s, want exit status 3", m.PID(), how)
		}
	}
	if running == nil {
		t.Fatal("every master exited: none holds the pidfile")
	}
	if pid, err := pidfile.Holder(shared); err != nil || pid != running.PID() {
		t.Fatalf("pidfile holder %d (%v), want the running master %d", pid, err, running.PID())
	}
}

// A pidfile left by a master that died, whose PID now belongs to an
// unrelated process: reload and status must not signal or trust it.
func TestClientsIgnoreAStalePidfile(t *testing.T) {
	for _, tc := range []struct {
		name          string
		staleControl  bool // a dead master's control socket file next to it
		wantSubstring string
	}{
		{"no control socket", false, "is stale: no running baton holds it"},
		{"stale control socket", true, "is stale: no running baton holds it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sleeper := exec.Command("sleep", "60") // dies of the SIGHUP it must not get
			if err := sleeper.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { sleeper.Wait(); close(exited) }()
			t.Cleanup(func() { harness.Terminate(sleeper.Process, exited, syscall.SIGKILL, time.Second) })
			path := filepath.Join(t.TempDir(), "app.pid")
			if err := os.WriteFile(path, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.staleControl {
				l, err := net.Listen("unix", control.DefaultPath(path))
				if err != nil {
					t.Fatal(err)
				}
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
			}
			for _, args := range [][]string{{"reload", "--pidfile", path}, {"status", "--pidfile", path}, {"reload", "--wait", "--pidfile", path}} {
				code, stdout, stderr := harness.Run(t, 15*time.Second, args...)
				if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.wantSubstring) {
					t.Errorf("baton %s: exit %d, stdout %q, stderr %q; want exit 1 and one line saying %q", strings.Join(args, " "), code, stdout, stderr, tc.wantSubstring)
				}
			}
			select {
			case <-exited:
				t.Fatalf("the process that reused the dead master's PID was killed: %s", sleeper.ProcessState)
			default:
			}
		})
	}
}

// With few file descriptors (ulimit -n 35), idle connections to the
// control socket exhaust them: as many as the master has left, and a few
// more waiting in the backlog. The control server must keep accepting
// once they are gone, the idle ones must not stay forever, and the log
// must say what to raise.
func TestControlSocketSurvivesFdExhaustion(t *testing.T) {
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Wrap: []string{"sh", "-c", `ulimit -n 35 && exec "$0" "$@"`}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	path := control.DefaultPath(b.PIDFile)
	open, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.PID()))
	if err != nil || len(open) >= 35 {
		t.Fatalf("master's open fds: %d, %v", len(open), err)
	}
	var idle []net.Conn
	for range 35 - len(open) + 3 {
		if c, err := net.Dial("unix", path); err == nil {
			idle = append(idle, c)
		}
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	warn := b.WaitFor(t, 10*time.Second, func(e harness.Event) bool {
		return e.Kind() == "control_accept_failed"
	})
	if !strings.Contains(warn.Str("error"), "ulimit -n") || !strings.Contains(warn.Str("error"), "LimitNOFILE=") {
		t.Errorf("accept failure logged as %v, want it to say to raise ulimit -n or LimitNOFILE=", warn)
	}
	// The idle connections are still open on the test's side: the master
	// must drop them itself, then answer.
	start := time.Now()
	code, stdout, stderr := harness.Run(t, 20*time.Second, "status", "--pidfile", b.PIDFile)
	if code != 0 || !strings.Contains(stdout, "serving      generation 1") {
		t.Fatalf("status with %d idle control connections: exit %d after %s, %q %q", len(idle), code, time.Since(start), stdout, stderr)
	}
	t.Logf("status answered after %s", time.Since(start).Round(time.Millisecond))
	if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
		t.Fatalf("reload after fd exhaustion: %v", end)
	}
}

// A 32 MiB control request is refused after its first 4 KiB: a short
// error, not an echo, and the master's memory stays flat.
func TestControlRequestIsCapped(t *testing.T) {
	b, _ := startWorker(t, nil)
	path := control.DefaultPath(b.PIDFile)
	before := peakRSS(t, b.PID())

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		huge := []byte(`{"command":"` + strings.Repeat("x", 32<<20) + `"}` + "\n")
		c.Write(huge) // fails once the master has answered and closed
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	answer, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil && len(answer) == 0 {
		t.Fatalf("no answer to a 32 MiB request: %v", err)
	}
	var resp control.Response
	if err := json.Unmarshal(answer, &resp); err != nil || resp.OK || !strings.Contains(resp.Error, "longer than 4096 bytes") || len(answer) > 200 {
		t.Fatalf("answer to a 32 MiB request (%d bytes): %.200q, want a short error saying it is longer than 4096 bytes", len(answer), answer)
	}
	after := peakRSS(t, b.PID())
	t.Logf("master peak RSS %d kB before, %d kB after a 32 MiB request", before, after)
	if after-before > 8<<10 {
		t.Errorf("master peak RSS grew by %d kB for a refused request", after-before)
	}

	for _, tc := range []struct{ send, want string }{
		{`{"command":"` + strings.Repeat("y", 1000) + `"}` + "\n", `unknown command "` + strings.Repeat("y", 40) + `": want `},
		{"not json\n", "bad request: "},
		{"", "bad request: "}, // nothing within the request timeout
	} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(tc.send))
		c.SetReadDeadline(time.Now().Add(control.RequestTimeout + 5*time.Second))
		var resp control.Response
		err = json.NewDecoder(c).Decode(&resp)
		c.Close()
		if err != nil || resp.OK || !strings.HasPrefix(resp.Error, tc.want) || len(resp.Error) > 200 {
			t.Errorf("request %.50q: %+v, %v; want a short error starting %.80q", tc.send, resp, err, tc.want)
		}
	}
}

// peakRSS is a process's peak resident set size in kB (VmHWM).
func peakRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return kb
}

// `reload --wait` without --timeout must not wait forever on a master
// that stopped answering or died.
func TestReloadWaitOnAMasterThatNeverAnswers(t *testing.T) {
	t.Parallel() // it waits out the control socket's silence, idle
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		want string
	}{
		{"stopped", syscall.SIGSTOP, "has not answered for 10s"},
		{"killed", syscall.SIGKILL, "closed the connection without an answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, _ := startWorker(t, nil, "-ready-after", "3s")
			bin := harness.Build(t)
			type result struct {
				err            error
				stdout, stderr string
				took           time.Duration
			}
			done := make(chan result, 1)
			cmd := exec.Command(bin.Baton, "reload", "--wait", "--pidfile", b.PIDFile)
			cmd.Env = append(os.Environ(), harness.ProcessEnv...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() {
				err := cmd.Wait()
				done <- result{err, stdout.String(), stderr.String(), time.Since(start)}
			}()
			defer cmd.Process.Kill()
			b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_started" && e.Int("gen") == 2 })
			b.Signal(t, tc.sig)
			defer b.Cmd.Process.Signal(syscall.SIGCONT)
			var r result
			select {
			case r = <-done:
			case <-time.After(control.Silence + 20*time.Second):
				t.Fatalf("reload --wait still waiting on a %s master after %s", tc.name, time.Since(start))
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("reload --wait on a %s master: exit %d after %s, stdout %q, stderr %q; want exit 1 and one line saying %q", tc.name, code, r.took, r.stdout, r.stderr, tc.want)
			}
			t.Logf("reload --wait gave up on a %s master after %s: %s", tc.name, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
		})
	}
}

// A plain `baton reload` (no --wait) to a stopped master gives up too: a
// deploy script's reload must not hang.
func TestReloadOnAStoppedMaster(t *testing.T) {
	t.Parallel() // it waits out the control socket's silence, idle
	b, _ := startWorker(t, nil)
	b.Signal(t, syscall.SIGSTOP)
	defer b.Cmd.Process.Signal(syscall.SIGCONT)
	code, _, stderr := harness.Run(t, control.Silence+20*time.Second, "reload", "--pidfile", b.PIDFile)
	if code != 1 || !strings.Contains(stderr, "has not answered for 10s") {
		t.Fatalf("reload on a stopped master: exit %d, %q; want exit 1 saying it has not answered", code, stderr)
	}
}

// A worker's STATUS= text reaches `baton status` on a terminal: control
// characters in it are shown escaped, never sent to the terminal.
func TestStatusEscapesWorkerText(t *testing.T) {
	hostile := "\x1b[2J\x1b[Hall good\rforged line\x07"
	b, _ := startWorker(t, nil, "-status", hostile)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_status" })
	code, stdout, stderr := harness.Run(t, 10*time.Second, "status", "--pidfile", b.PIDFile)
	if code != 0 {
		t.Fatalf("status: exit %d, %q", code, stderr)
	}
	// The forged line must not start a line of its own.
	if strings.ContainsAny(stdout, "\x1b\r\x07") || strings.Contains(stdout, "\nforged") {
		t.Fatalf("status output carries the worker's control characters:\n%q", stdout)
	}
	if want := `\x1b[2J\x1b[Hall good\rforged line\a`; !strings.Contains(stdout, want) {
		t.Errorf("status output %q, want the status shown escaped as %s", stdout, want)
	}
}

// Failing to remove the pidfile or the control socket at exit is said.
func TestLeftoversAtExitAreLogged(t *testing.T) {
	b, _ := startWorker(t, nil)
	dir := filepath.Dir(b.PIDFile)
	// root ignores permissions, not the immutable attribute.
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i %s: %v %s", dir, err, out)
	}
	defer exec.Command("chattr", "-i", dir).Run()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, msg := range []string{"pidfile_left", "control_left"} {
		if e := b.Find(func(e harness.Event) bool { return e.Kind() == msg }); len(e) != 1 || e[0].Str("level") != "warn" || e[0].Str("error") == "" {
			t.Errorf("%q: %v, want one warning with the error", msg, e)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
