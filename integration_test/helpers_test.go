package integration_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
	"github.com/baton-sh/baton/pidfile"
)

// startWorker starts baton over the test worker on a free loopback port
// and returns it with the worker's URL.
func startWorker(t *testing.T, batonFlags []string, workerFlags ...string) (*harness.Baton, string) {
	t.Helper()
	bin := harness.Build(t)
	args := append([]string{"--listen", "http=tcp://127.0.0.1:0"}, batonFlags...)
	args = append(append(args, "--", bin.TestWorker), workerFlags...)
	b := harness.Start(t, args...)
	return b, "http://" + b.Addr(t, "http")
}

// startLoad keeps 4 loops on new connections and 4 on keep-alive ones
// busy against url until the test stops it. Every request is a POST: a
// client never resends one, so a request a drain drops is a failure here,
// where Go's client would quietly retry a GET on a reused connection.
func startLoad(t *testing.T, url string) *loadgen.Load {
	t.Helper()
	load, err := loadgen.Start(loadgen.Config{URL: url, NewConns: 4, KeepAlive: 4, PostBody: []byte("load"), MaxDuration: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { load.Stop() })
	harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
	return load
}

// requireNoFailures fails the test unless every request succeeded.
func requireNoFailures(t *testing.T, load *loadgen.Load) loadgen.Summary {
	t.Helper()
	sum := load.Stop().Summarize()
	t.Logf("load: %s", sum)
	if sum.Failed != 0 || sum.Requests == 0 {
		t.Fatalf("want 0 failed of >0 requests, got %s", sum)
	}
	return sum
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

func requireNoZombies(t *testing.T, parent int) {
	t.Helper()
	if z := harness.Zombies(parent); len(z) > 0 {
		t.Fatalf("defunct children of %d: %+v", parent, z)
	}
}

// reloadsUnderLoad keeps load on b's socket "http" while it reloads b n
// times, and requires what baton promises: every reload completes with a
// new worker PID and the old worker gone, the master's PID (and pidfile)
// never changes, requests keep flowing, none fails, and no zombie is left.
// It returns the PID of the last worker.
func reloadsUnderLoad(t *testing.T, b *harness.Baton, n int) int {
	t.Helper()
	return reloadsWithLoad(t, b, n, startLoad(t, "http://"+b.Addr(t, "http")+"/"))
}

// reloadsWithLoad is reloadsUnderLoad with the load the caller started.
func reloadsWithLoad(t *testing.T, b *harness.Baton, n int, load *loadgen.Load) int {
	t.Helper()
	return reloadsInFlight(t, b, n, load, nil)
}

// reloadsInFlight is reloadsWithLoad with, when slow is not nil, a slow
// request that slow puts in flight before each reload: the generation it
// reached must answer it (a body with "slow done") while it drains.
func reloadsInFlight(t *testing.T, b *harness.Baton, n int, load *loadgen.Load, slow func(t *testing.T) <-chan harness.Answer) int {
	t.Helper()
	gen := b.Generation()
	pid := b.WorkerPID(t, gen)
	var took []string
	for i := 1; i <= n; i++ {
		before := load.Done()
		var answer <-chan harness.Answer
		if slow != nil {
			answer = slow(t)
		}
		end := b.Reload(t, 60*time.Second)
		if end.Kind() != "reload_complete" || end.Int("gen") != gen+i {
			t.Fatalf("reload %d: %v", i, end)
		}
		if answer != nil {
			select {
			case a := <-answer:
				if a.Err != nil || !strings.Contains(a.Body, "slow done") {
					t.Fatalf("reload %d: the slow request in flight during the drain: %q, %v; want it answered", i, a.Body, a.Err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("reload %d: the slow request in flight during the drain: no answer 30s after the reload", i)
			}
		}
		took = append(took, end.Str("took"))
		next := b.WorkerPID(t, gen+i)
		if next == pid || harness.Alive(pid) {
			t.Fatalf("reload %d: worker %d not replaced (now %d, old alive: %v)", i, pid, next, harness.Alive(pid))
		}
		if got, err := pidfile.Read(b.PIDFile); err != nil || got != b.PID() {
			t.Fatalf("reload %d: pidfile says %d (%v), master is %d", i, got, err, b.PID())
		}
		pid = next
		harness.Eventually(t, 20*time.Second, "requests flowing after the reload",
			func() bool { return load.Done() >= before+100 })
	}
	sum := requireNoFailures(t, load)
	if len(sum.PIDs) < n+1 {
		t.Errorf("answers came from %d worker pids, want at least %d (one per generation)", len(sum.PIDs), n+1)
	}
	t.Logf("reloads took %s", strings.Join(took, ", "))
	requireNoZombies(t, b.PID())
	return pid
}

// stopCleanly sends TERM and requires exit 0 with the worker gone.
func stopCleanly(t *testing.T, b *harness.Baton, worker int) {
	t.Helper()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d after TERM, want 0", code)
	}
	if harness.Alive(worker) {
		t.Fatalf("worker %d outlived the master", worker)
	}
}

// freePort returns a loopback address nobody listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
