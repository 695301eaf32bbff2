// Package integration_test runs the real baton binary over real workers,
// under real load on loopback, the way users run it.
package integration_test

import (
	"context"
	"fmt"
	"io"
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
)

func TestReloadsUnderLoadFailNoRequest(t *testing.T) {
	b, _ := startWorker(t, nil)
	pid := reloadsUnderLoad(t, b, 10)
	stopCleanly(t, b, pid)
}

// A deploy that breaks the new version must not take the old one down.
func TestFailedReloadKeepsTheOldGenerationServing(t *testing.T) {
	bin := harness.Build(t)
	for _, tc := range []struct {
		name     string
		flags    []string // baton's
		broken   []string // the broken version's worker flags
		wantFail string
	}{
		{"new generation exits at start", nil, []string{"-fail-at-start"}, "exited with status 1 before it was ready"},
		{"new generation never ready", []string{"--ready-timeout", "1s"}, []string{"-never-ready"}, "not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := filepath.Join(t.TempDir(), "app")
			harness.Deploy(t, app, bin.TestWorker)
			b := harness.Start(t, append(append([]string{"--listen", "http=tcp://127.0.0.1:0"}, tc.flags...), "--", app)...)
			url := "http://" + b.Addr(t, "http") + "/"
			load := startLoad(t, url)
			pid := b.WorkerPID(t, 1)

			harness.Deploy(t, app, append([]string{bin.TestWorker}, tc.broken...)...)
			end := b.Reload(t, 20*time.Second)
			if end.Kind() != "reload_failed" || !strings.Contains(end.Str("error"), tc.wantFail) ||
				!strings.Contains(end.Str("error"), "generation 1 is still serving") {
				t.Fatalf("want a failed reload saying %q and that generation 1 still serves, got %v", tc.wantFail, end)
			}
			if !harness.Alive(pid) {
				t.Fatalf("old worker %d is gone after a failed reload", pid)
			}
			if body := get(t, url); !strings.Contains(body, "pid="+strconv.Itoa(pid)) {
				t.Fatalf("after a failed reload, answered by %q, want the old worker %d", body, pid)
			}

			// The fix is deployed: the next reload succeeds.
			harness.Deploy(t, app, bin.TestWorker)
			if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
				t.Fatalf("reload after fixing the deploy: %v", end)
			}
			requireNoFailures(t, load)
			requireNoZombies(t, b.PID())
		})
	}
}

func TestCrashedWorkerIsRestartedOnTheSameSockets(t *testing.T) {
	b, url := startWorker(t, nil)
	pid := b.WorkerPID(t, 1)
	syscall.Kill(pid, syscall.SIGKILL)

	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_crashed" })
	// The restart runs the same generation, the same release.
	done := b.WaitFor(t, 10*time.Second, func(e harness.Event) bool {
		return e.Kind() == "reload_complete" && e.Str("trigger") == "crash" && e.Int("gen") == 1
	})
	next := b.Find(func(e harness.Event) bool { return e.Kind() == "worker_started" && e.Int("gen") == 1 })[1].Int("pid")
	if done.Int("index") != 0 || next == pid {
		t.Fatalf("restart: %v, new pid %d", done, next)
	}
	if body := get(t, url+"/"); !strings.Contains(body, "pid="+strconv.Itoa(next)) {
		t.Fatalf("after the crash, answered by %q, want the restarted worker %d", body, next)
	}
	requireNoZombies(t, b.PID())
}

func TestWorkerCrashLoopGivesUpWithExit1(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--restart-limit", "2", "--", app)

	harness.Deploy(t, app, bin.TestWorker, "-fail-at-start")
	syscall.Kill(b.WorkerPID(t, 1), syscall.SIGKILL)
	if code := b.Wait(t, 20*time.Second); code != 1 {
		t.Fatalf("baton exited %d after a crash loop, want 1", code)
	}
	if !strings.Contains(b.Output(), "worker keeps crashing: giving up") {
		t.Fatalf("no clear log line about giving up:\n%s", b.Output())
	}
}

func TestStopDrainsAnInFlightRequest(t *testing.T) {
	b, url := startWorker(t, nil)
	pid := b.WorkerPID(t, 1)
	slow := b.InFlight(t, url, 1500*time.Millisecond)

	b.Signal(t, syscall.SIGTERM)
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") {
		t.Fatalf("in-flight request cut by the stop: %q %v", a.Body, a.Err)
	}
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d, want 0", code)
	}
	if harness.Alive(pid) {
		t.Fatalf("worker %d still running", pid)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second); err == nil {
		t.Fatalf("port still accepting after baton stopped")
	}
}

// A reload drains the old generation: a slow request it was serving still
// completes, while new requests go to the new generation.
func TestReloadLetsTheOldGenerationFinishItsRequest(t *testing.T) {
	b, url := startWorker(t, nil)
	old := b.WorkerPID(t, 1)
	slow := b.InFlight(t, url, 1500*time.Millisecond)

	b.Signal(t, syscall.SIGHUP)
	// The worker says STOPPING=1 once it has stopped accepting.
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_stopping" && e.Int("pid") == old })
	if body := get(t, url+"/"); strings.Contains(body, "pid="+strconv.Itoa(old)) {
		t.Fatalf("draining worker %d still accepted a new request: %q", old, body)
	}
	if a := <-slow; a.Err != nil || !strings.Contains(a.Body, "slow done") || !strings.Contains(a.Body, "pid="+strconv.Itoa(old)) {
		t.Fatalf("the old generation's in-flight request: %q %v", a.Body, a.Err)
	}
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 2 })
}

// A quiet service: the old generation answers one last request while the
// new one is still starting, then no traffic comes. The old generation
// must still drain at once when told to. (Had the master switched the
// shared socket back to blocking mode when it started the new worker, the
// old Go worker's next accept(2) would block in the kernel, out of reach of
// its own listener's Close, until the drain timeout killed it.)
func TestQuietOldGenerationDrainsAtOnce(t *testing.T) {
	// Every generation sleeps 1s before it listens: the request below,
	// sent during that second, can only reach generation 1.
	b, url := startWorker(t, []string{"--drain-timeout", "20s"}, "-ready-after", "1s")
	old := b.WorkerPID(t, 1)
	b.Signal(t, syscall.SIGHUP)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_started" && e.Int("gen") == 2 })
	if body := get(t, url+"/"); !strings.Contains(body, "gen=1") {
		t.Fatalf("during the new generation's start, answered by %q, want generation 1", body)
	}
	drain := b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "draining" && e.Int("pid") == old })
	end := b.WaitFor(t, 30*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == old })
	if how := end.Str("how"); how != "exited with status 0" {
		t.Fatalf("old worker %s, want it to drain by itself and exit 0", how)
	}
	if d := faultTime(t, end).Sub(faultTime(t, drain)); d > 5*time.Second {
		t.Fatalf("old worker took %s to drain with nothing in flight: it waited for traffic", d)
	}
}

// Start-up refusals: each one exits with the contract's code and says
// what is wrong in one line.
func TestStartupFailures(t *testing.T) {
	bin := harness.Build(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	held := harness.Start(t, "--listen", "tcp://127.0.0.1:0", "--", bin.TestWorker, "-name", "tcp0")
	missingDir := filepath.Join(t.TempDir(), "no-such-dir")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--no-such-flag", "--", "true"}, 2, "unknown flag --no-such-flag"},
		{"no command", []string{"--listen", "tcp://127.0.0.1:0"}, 2, "no worker command"},
		{"bad listen spec", []string{"--listen", "sctp://1.2.3.4:5", "--", "true"}, 2, "sctp"},
		{"bad ready", []string{"--ready", "whenever", "--", "true"}, 2, "--ready"},
		{"port in use", []string{"--listen", "tcp://" + busy.Addr().String(), "--", bin.TestWorker}, 3, "in use"},
		{"pidfile held", []string{"--pidfile", held.PIDFile, "--", bin.TestWorker}, 3, fmt.Sprint(held.PID())},
		{"pidfile unwritable", []string{"--pidfile", filepath.Join(missingDir, "b.pid"), "--", bin.TestWorker}, 3, "pidfile"},
		{"first worker fails", []string{"--listen", "tcp://127.0.0.1:0", "--", bin.TestWorker, "-fail-at-start"}, 3, "first worker never became ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := harness.Run(t, 30*time.Second, tc.args...)
			firstLine, _, _ := strings.Cut(stderr, "\n")
			if tc.code == 3 {
				// The log may precede it; the verdict is the last line.
				lines := strings.Split(strings.TrimSpace(stderr), "\n")
				firstLine = lines[len(lines)-1]
			}
			if code != tc.code || !strings.Contains(firstLine, tc.want) || !strings.HasPrefix(firstLine, "baton: ") {
				t.Fatalf("exit %d, line %q; want exit %d and a line containing %q\nstderr:\n%s", code, firstLine, tc.code, tc.want, stderr)
			}
		})
	}
	if !harness.Alive(held.PID()) {
		t.Fatal("the master holding the pidfile was disturbed")
	}
}

// Signals the master does not act on itself reach the serving worker.
func TestUserSignalsAreForwardedToTheWorker(t *testing.T) {
	b, _ := startWorker(t, []string{"--drain-signal", "USR2"}, "-ignore-drain")
	pid := b.WorkerPID(t, 1)
	b.Signal(t, syscall.SIGUSR2) // the worker drains on USR2
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "forwarded" && e.Str("signal") == "USR2" })
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == pid })
}

// The README's first command.
func TestDemo(t *testing.T) {
	code, stdout, stderr := harness.Run(t, 60*time.Second, "demo", "--reloads", "3")
	if code != 0 || !strings.Contains(stdout, "3 reloads") || !strings.Contains(stdout, " 0 failed") {
		t.Fatalf("baton demo exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("baton demo:\n%s", stdout)
}

// A unix socket is bound once with its mode, kept across reloads, and
// removed when baton exits.
func TestUnixSocketAcrossReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	bin := harness.Build(t)
	b := harness.Start(t, "--listen", "web=unix://"+path+"?mode=0660", "--", bin.TestWorker, "-name", "web")
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket file %s: %v %v, want a socket with mode 0660", path, fi.Mode(), err)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
	for gen := 1; gen <= 3; gen++ {
		resp, err := client.Get("http://app/")
		if err != nil {
			t.Fatalf("generation %d over %s: %v", gen, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), fmt.Sprintf("gen=%d ", gen)) {
			t.Fatalf("answered %q, want generation %d", body, gen)
		}
		if gen < 3 {
			b.Reload(t, 20*time.Second)
		}
	}
	client.CloseIdleConnections()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d", code)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left behind: %v", err)
	}
}

// A UDP service keeps answering across reloads: a datagram the old
// generation has read is answered before it exits, and those it has not
// read wait on the shared socket for the new one. Clients send one
// datagram at a time and wait for its answer, so any loss shows.
func TestUDPAcrossReloads(t *testing.T) {
	b, _ := startWorker(t, []string{"--listen", "dns=udp://127.0.0.1:0"}, "-udp", "dns")
	addr := b.Addr(t, "dns")

	stop := make(chan struct{})
	type result struct {
		answered int
		lost     []string
		pids     map[string]bool
	}
	results := make(chan result, 4)
	for c := 0; c < 4; c++ {
		go func() {
			r := result{pids: map[string]bool{}}
			defer func() { results <- r }()
			conn, err := net.Dial("udp", addr)
			if err != nil {
				r.lost = append(r.lost, err.Error())
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("client=%d seq=%d", c, i)
				conn.Write([]byte(msg))
				// Long enough that a loaded machine is not taken for a
				// lost datagram.
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := conn.Read(buf)
				answer := string(buf[:n])
				if err != nil || !strings.HasSuffix(answer, " "+msg) {
					r.lost = append(r.lost, fmt.Sprintf("%s: %q %v", msg, answer, err))
					continue
				}
				r.answered++
				r.pids[strings.Fields(answer)[1]] = true
			}
		}()
	}

	for i := 0; i < 5; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
	}
	close(stop)
	total, pids := 0, map[string]bool{}
	for c := 0; c < 4; c++ {
		r := <-results
		for _, l := range r.lost {
			t.Errorf("lost datagram %s", l)
		}
		total += r.answered
		for p := range r.pids {
			pids[p] = true
		}
	}
	t.Logf("udp: %d datagrams answered by %d worker pids across 5 reloads", total, len(pids))
	if total == 0 || len(pids) < 6 {
		t.Fatalf("%d datagrams answered by %d worker pids, want answers from all 6 generations", total, len(pids))
	}
}
