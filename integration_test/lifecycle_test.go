package integration_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
)

// adminURL is the base URL of b's --admin endpoint.
func adminURL(t *testing.T, b *harness.Baton) string {
	t.Helper()
	e := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "admin_listening" })
	return "http://" + e.Str("addr")
}

func statusOf(url, method string) int {
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventTime is when baton logged e.
func eventTime(t *testing.T, e harness.Event) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, e.Str("time"))
	if err != nil {
		t.Fatalf("event %v: %v", e, err)
	}
	return at
}

// The story of issue 13: a load balancer sends traffic until it sees the
// instance is not ready. With --stop-delay 2s, TERM makes /-/ready answer
// 503 at once while the worker keeps serving for 2 s; only then does the
// drain begin, and no request fails. --on-ready registers every
// generation that serves, --on-stopping deregisters before the drain.
func TestLifecycleStopDelayAndHooks(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "hooks.log")
	hook := func(what string) string {
		return fmt.Sprintf(`sh -c 'echo %s $BATON_GENERATION $BATON_WORKER_PID $BATON_ADDRS >> %s'`, what, record)
	}
	b, url := startWorker(t, []string{"--stop-delay", "2s", "--admin", "127.0.0.1:0",
		"--on-ready", hook("register"), "--on-stopping", hook("deregister")})
	admin := adminURL(t, b)
	addr := strings.TrimPrefix(url, "http://")
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_done" && e.Int("gen") == 1 })
	if code := statusOf(admin+"/-/ready", "GET"); code != 200 {
		t.Fatalf("/-/ready answers %d while serving", code)
	}

	// A reload registers the new generation.
	if end := b.Reload(t, 30*time.Second); end.Kind() != "reload_complete" {
		t.Fatal(end)
	}
	worker := b.WorkerPID(t, 2)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_done" && e.Int("gen") == 2 })

	load := startLoad(t, url+"/")
	term := time.Now()
	b.Signal(t, syscall.SIGTERM)
	for statusOf(admin+"/-/ready", "GET") != http.StatusServiceUnavailable {
		if time.Since(term) > 2*time.Second {
			t.Fatal("/-/ready still not 503 2s after TERM")
		}
	}
	notReady := time.Since(term)
	if notReady > 100*time.Millisecond {
		t.Errorf("/-/ready answered 503 %s after TERM, want within 100ms", notReady)
	}

	// Requests keep succeeding through the delay. The load stops before
	// the drain: after it the socket, held by nobody who accepts, is
	// expected to refuse.
	harness.Eventually(t, 3*time.Second, "1.8s after TERM", func() bool { return time.Since(term) >= 1800*time.Millisecond })
	samples := load.Stop()
	during := samples.Between(term, term.Add(1800*time.Millisecond)).Summarize()
	t.Logf("/-/ready 503 after %s; load during the stop delay: %s", notReady.Round(time.Microsecond), during)
	if during.Requests < 100 || during.Failed != 0 {
		t.Fatalf("during the stop delay: %s, want >=100 requests and 0 failed", during)
	}
	if sum := samples.Summarize(); sum.Failed != 0 {
		t.Fatalf("load: %s", sum)
	}

	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d, want 0", code)
	}
	if harness.Alive(worker) {
		t.Fatalf("worker %d outlived the master", worker)
	}
	drain := b.WaitFor(t, time.Second, func(e harness.Event) bool { return e.Kind() == "draining" && e.Int("gen") == 2 })
	deregistered := b.WaitFor(t, time.Second, func(e harness.Event) bool {
		return e.Kind() == "hook_done" && e.Str("hook") == "on-stopping"
	})
	stopped := b.WaitFor(t, time.Second, func(e harness.Event) bool { return e.Kind() == "stopped" })
	stopAt := eventTime(t, b.WaitFor(t, time.Second, func(e harness.Event) bool { return e.Kind() == "stopping" }))
	drainAt := eventTime(t, drain)
	if d := drainAt.Sub(stopAt); d < 2*time.Second || d > 2500*time.Millisecond {
		t.Errorf("the drain began %s after the stop, want --stop-delay 2s", d)
	}
	if !eventTime(t, deregistered).Before(drainAt) || !drainAt.Before(eventTime(t, stopped)) {
		t.Errorf("order: deregistered %s, drain %s, stopped %s", deregistered["time"], drain["time"], stopped["time"])
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("register 1 %d http=%s\nregister 2 %[3]d http=%[2]s\nderegister 2 %[3]d http=%[2]s\n",
		b.WorkerPID(t, 1), addr, worker)
	if string(got) != want {
		t.Fatalf("hooks wrote\n%s\nwant\n%s", got, want)
	}
	t.Logf("stop: drain began %s after TERM, stopped %s after TERM",
		drainAt.Sub(stopAt).Round(time.Millisecond), eventTime(t, stopped).Sub(stopAt).Round(time.Millisecond))
}

// A second TERM during the stop delay skips the rest of it.
func TestLifecycleSecondTermSkipsTheDelay(t *testing.T) {
	b, _ := startWorker(t, []string{"--stop-delay", "1m"})
	b.Signal(t, syscall.SIGTERM)
	b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "stopping" })
	start := time.Now()
	b.Signal(t, syscall.SIGTERM)
	if code := b.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Logf("stopped %s after the second TERM", time.Since(start).Round(time.Millisecond))
}

// POST /-/quit is a graceful stop, and only with --admin-lifecycle.
func TestLifecycleAdminQuit(t *testing.T) {
	b, _ := startWorker(t, []string{"--admin", "127.0.0.1:0"})
	if code := statusOf(adminURL(t, b)+"/-/quit", "POST"); code != http.StatusForbidden {
		t.Fatalf("POST /-/quit without --admin-lifecycle: %d, want 403", code)
	}
	b2, _ := startWorker(t, []string{"--admin", "127.0.0.1:0", "--admin-lifecycle", "--stop-delay", "300ms"})
	admin := adminURL(t, b2)
	if code := statusOf(admin+"/-/quit", "POST"); code != http.StatusOK {
		t.Fatalf("POST /-/quit: %d", code)
	}
	resp, err := http.Get(admin + "/metrics")
	if err == nil {
		var sb strings.Builder
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		resp.Body.Close()
		if !strings.Contains(sb.String(), `baton_stopping{phase="delay"} 1`) {
			t.Errorf("metrics during the stop delay lack baton_stopping{phase=\"delay\"} 1")
		}
	}
	if code := b2.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after POST /-/quit", code)
	}
}

// A hook that hangs is killed at --hook-timeout with whatever it started,
// and never holds up the service.
func TestLifecycleHookTimeout(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "child.pid")
	b, _ := startWorker(t, []string{"--hook-timeout", "300ms",
		"--on-ready", fmt.Sprintf(`sh -c 'sleep 60 & echo $! > %s; echo registering; wait'`, marker)})
	e := b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "hook_failed" })
	if !strings.Contains(e.Str("error"), "--hook-timeout") || e.Str("output") != "registering" {
		t.Fatalf("hook failure: %v", e)
	}
	raw, _ := os.ReadFile(marker)
	var child int
	fmt.Sscan(string(raw), &child)
	if child == 0 {
		t.Fatal("the hook's child pid was not recorded")
	}
	harness.Eventually(t, 5*time.Second, "the hook's child killed", func() bool { return !harness.Alive(child) })
	stopCleanly(t, b, b.WorkerPID(t, 1))
}
