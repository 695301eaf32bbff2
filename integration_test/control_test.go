package integration_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"github.com/baton-sh/baton/upgrader"
)

// A master whose control socket is elsewhere is still reloaded by
// `baton reload --pidfile`: by SIGHUP, sent through a pidfd that the
// pidfile's lock proves is the master's.
func TestReloadWithoutAControlSocketSignalsTheMaster(t *testing.T) {
	b, _ := startWorker(t, []string{"--control", filepath.Join(t.TempDir(), "elsewhere.sock")})
	code, stdout, stderr := harness.Run(t, 10*time.Second, "reload", "--pidfile", b.PIDFile)
	if code != 0 || stdout != fmt.Sprintf("reload requested from master pid %d\n", b.PID()) {
		t.Fatalf("reload --pidfile without a control socket next to it: exit %d, %q %q", code, stdout, stderr)
	}
	end := b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 2 })
	if end.Kind() != "reload_complete" {
		t.Fatalf("after the signal: %v", end)
	}
}

// A deploy script learns from `baton reload --wait` whether the new
// version came up.
func TestReloadWaitReportsTheOutcome(t *testing.T) {
	bin := harness.Build(t)
	app := filepath.Join(t.TempDir(), "app")
	harness.Deploy(t, app, bin.TestWorker)
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", app)

	code, stdout, stderr := harness.Run(t, 30*time.Second, "reload", "--wait", "--pidfile", b.PIDFile)
	if code != 0 || !strings.HasPrefix(stdout, "reloaded: generation 2 serving after ") {
		t.Fatalf("good reload: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	harness.Deploy(t, app, bin.TestWorker, "-fail-at-start")
	code, stdout, stderr = harness.Run(t, 30*time.Second, "reload", "--wait", "--pidfile", b.PIDFile)
	want := regexp.MustCompile(`^baton: reload failed: new worker \(generation 3, pid \d+\) exited with status 1 before it was ready; generation 2 is still serving\n$`)
	if code != 1 || !want.MatchString(stderr) {
		t.Fatalf("failing reload: exit %d, stdout %q, stderr %q; want exit 1 and one line matching %s", code, stdout, stderr, want)
	}

	// Without --wait it only asks.
	harness.Deploy(t, app, bin.TestWorker)
	code, stdout, _ = harness.Run(t, 30*time.Second, "reload", "--pidfile", b.PIDFile)
	if code != 0 || stdout != "reload requested\n" {
		t.Fatalf("reload without --wait: exit %d, stdout %q", code, stdout)
	}
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" && e.Int("gen") == 4 })
}

// Callers who ask while a reload is under way all get the result of the
// one reload queued behind it, the first that covers their request.
func TestConcurrentReloadWaitCallersShareTheCoveringReload(t *testing.T) {
	b, _ := startWorker(t, nil, "-ready-after", "700ms")
	type outcome struct {
		code   int
		stdout string
	}
	reload := func(out chan<- outcome) {
		code, stdout, stderr := harness.Run(t, 30*time.Second, "reload", "--wait", "--pidfile", b.PIDFile)
		out <- outcome{code, stdout + stderr}
	}
	first := make(chan outcome, 1)
	go reload(first)
	b.WaitFor(t, 10*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_started" && e.Int("gen") == 2 })

	later := make(chan outcome, 2)
	go reload(later)
	go reload(later)
	if o := <-first; o.code != 0 || !strings.Contains(o.stdout, "generation 2 serving") {
		t.Fatalf("first caller: %+v, want generation 2", o)
	}
	for i := 0; i < 2; i++ {
		if o := <-later; o.code != 0 || !strings.Contains(o.stdout, "generation 3 serving") {
			t.Fatalf("caller during the reload: %+v, want generation 3 (the reload queued behind)", o)
		}
	}
	if n := len(b.Find(func(e harness.Event) bool { return e.Kind() == "reload_requested" })); n != 3 {
		t.Fatalf("%d reloads (start included) for three callers, want 3: two callers share one", n)
	}
}

func TestStatusJSONAndTheControlSocket(t *testing.T) {
	b, _ := startWorker(t, nil)
	b.Reload(t, 20*time.Second)
	sockPath := control.DefaultPath(b.PIDFile)
	fi, err := os.Stat(sockPath)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: %v %v, want a socket with mode 0600", sockPath, fi.Mode(), err)
	}

	code, stdout, stderr := harness.Run(t, 10*time.Second, "status", "--json", "--control", sockPath)
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, stderr)
	}
	var st upgrader.Status
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, stdout)
	}
	worker := b.WorkerPID(t, 2)
	switch {
	case st.PID != b.PID(), st.Generation != 2, st.WorkerPID != worker, !st.Ready, st.Stopping,
		len(st.Workers) != 1, st.Workers[0].State != "serving",
		st.LastReload == nil, !st.LastReload.OK, st.LastReload.Trigger != "signal", st.LastReload.TookSeconds <= 0,
		st.Restarts != 0, time.Since(st.Started) > time.Minute:
		t.Fatalf("status --json = %s\nwant master %d, generation 2 served by %d, last reload ok", stdout, b.PID(), worker)
	}

	code, stdout, _ = harness.Run(t, 10*time.Second, "status", "--pidfile", b.PIDFile)
	if code != 0 || !strings.Contains(stdout, "serving      generation 2, 1 of 1 workers, ready") ||
		!strings.Contains(stdout, fmt.Sprintf("worker 0     generation 2, pid %d, serving", worker)) {
		t.Fatalf("status: exit %d\n%s", code, stdout)
	}

	b.Signal(t, syscall.SIGTERM)
	b.Wait(t, 30*time.Second)
	if _, err := os.Lstat(sockPath); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind after exit: %v", err)
	}
	code, _, stderr = harness.Run(t, 10*time.Second, "status", "--control", sockPath)
	if code != 1 || !strings.Contains(stderr, "cannot reach the master") {
		t.Fatalf("status of a stopped master: exit %d, %q", code, stderr)
	}
}

// Under systemd (Type=notify-reload) baton reports its own lifecycle on
// the NOTIFY_SOCKET it was given, while its workers talk to baton's.
func TestMasterNotifiesItsServiceManager(t *testing.T) {
	sock, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	received := make(chan notify.Datagram, 32)
	go func() {
		for {
			d, err := sock.Receive()
			if err != nil {
				return
			}
			received <- d
		}
	}()
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Env: []string{"NOTIFY_SOCKET=" + sock.Path()}},
		"--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)

	// next returns the next message that changes the service's state,
	// skipping STATUS-only updates.
	next := func() notify.Message {
		t.Helper()
		for {
			select {
			case d := <-received:
				if d.PID != b.PID() {
					t.Fatalf("notify message from pid %d, not the master %d: %v", d.PID, b.PID(), d.Message)
				}
				if d.Message["STATUS"] == "" {
					t.Fatalf("notify message without a STATUS= line: %v", d.Message)
				}
				if d.Message["READY"] != "" || d.Message["RELOADING"] != "" || d.Message["STOPPING"] != "" {
					return d.Message
				}
			case <-time.After(20 * time.Second):
				t.Fatal("no notify message from the master within 20s")
			}
		}
	}
	if m := next(); m["READY"] != "1" {
		t.Fatalf("first state message %v, want READY=1", m)
	}
	b.Signal(t, syscall.SIGHUP)
	m := next()
	usec, err := strconv.ParseInt(m["MONOTONIC_USEC"], 10, 64)
	if m["RELOADING"] != "1" || err != nil || usec <= 0 || usec > monotonicUsec() {
		t.Fatalf("on HUP: %v, want RELOADING=1 with a MONOTONIC_USEC not in the future", m)
	}
	if m := next(); m["READY"] != "1" {
		t.Fatalf("after the reload: %v, want READY=1", m)
	}
	b.Signal(t, syscall.SIGTERM)
	if m := next(); m["STOPPING"] != "1" {
		t.Fatalf("on TERM: %v, want STOPPING=1", m)
	}
	if code := b.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("baton exited %d", code)
	}
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}

// The real systemd-socket-activate binds the port and, at the first
// connection, execs baton with it (LISTEN_FDS, LISTEN_FDNAMES=http): baton
// must use that socket, since binding the port again would fail, and keep
// it across reloads.
func TestSocketActivatedMaster(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is not installed (Debian package systemd)")
	}
	addr := freePort(t)
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Wrap: []string{activate, "--listen", addr, "--fdname", "http"}},
		"--listen", "http=tcp://"+addr, "--", bin.TestWorker)
	b.OutputContains(t, 10*time.Second, "Listening on "+addr)
	// Like systemd, it starts baton when the first connection arrives;
	// that connection waits in the socket's queue until a worker answers.
	if body := get(t, "http://"+addr+"/"); !strings.Contains(body, "gen=1") {
		t.Fatalf("first request through the activated socket: %q", body)
	}
	if e := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "listening" }); e["activated"] != true {
		t.Fatalf("socket not taken from systemd-socket-activate: %v", e)
	}
	load := startLoad(t, "http://"+addr+"/")
	for i := 0; i < 3; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
	}
	requireNoFailures(t, load)
}

// systemd binds ListenStream=PORT as [::]:PORT, one dual-stack socket for
// IPv4 and IPv6, and so does systemd-socket-activate --listen PORT. That
// socket is what --listen tcp://:PORT means: baton takes it by address
// (the names differ) instead of binding the port anew, which would fail,
// and the worker, asking for :PORT under a name nobody passed, finds it
// by the same rule. Both families reach the workers across reloads.
func TestSocketActivatedDualStackPort(t *testing.T) {
	activate, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Fatal("systemd-socket-activate is not installed (Debian package systemd)")
	}
	port := freeDualStackPort(t)
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Wrap: []string{activate, "--listen", port}},
		"--listen", "tcp://:"+port, "--", bin.TestWorker, "-name", "web", "-addr", ":"+port)
	b.OutputContains(t, 10*time.Second, "Listening on [::]:"+port)
	if body := get(t, "http://127.0.0.1:"+port+"/"); !strings.Contains(body, "gen=1") {
		t.Fatalf("first request, over IPv4: %q", body)
	}
	if body := get(t, "http://[::1]:"+port+"/"); !strings.Contains(body, "gen=1") {
		t.Fatalf("first request over IPv6: %q", body)
	}
	e := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "listening" })
	if e["activated"] != true || e.Str("addr") != "[::]:"+port {
		t.Fatalf("tcp://:%s did not take the [::]:%s socket systemd-socket-activate passed: %v", port, port, e)
	}
	load := startLoad(t, "http://127.0.0.1:"+port+"/")
	for i := 0; i < 2; i++ {
		if end := b.Reload(t, 20*time.Second); end.Kind() != "reload_complete" {
			t.Fatalf("reload %d: %v", i+1, end)
		}
	}
	requireNoFailures(t, load)
	if body := get(t, "http://[::1]:"+port+"/"); !strings.Contains(body, "gen=3") {
		t.Fatalf("after two reloads, over IPv6: %q", body)
	}
}

// freeDualStackPort is a TCP port free on every IPv4 and IPv6 address.
func freeDualStackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func TestAdminEndpoint(t *testing.T) {
	for _, lifecycle := range []bool{false, true} {
		t.Run(fmt.Sprintf("lifecycle=%v", lifecycle), func(t *testing.T) {
			flags := []string{"--admin", "127.0.0.1:0"}
			if lifecycle {
				flags = append(flags, "--admin-lifecycle")
			}
			b, _ := startWorker(t, flags)
			e := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Kind() == "admin_listening" })
			base := "http://" + e.Str("addr")

			for _, path := range []string{"/-/healthy", "/-/ready"} {
				if code, body := httpDo(t, "GET", base+path); code != 200 {
					t.Fatalf("GET %s: %d %s", path, code, body)
				}
			}
			if m := metrics(t, base); m[`baton_reloads_total{result="ok",trigger="signal"}`] != "0" || m["baton_generation"] != "1" || m["baton_worker_up"] != "1" {
				t.Fatalf("metrics at start: %v", m)
			}
			// Dashboards built on the Go and process metrics keep working.
			_, body := httpDo(t, "GET", base+"/metrics")
			for _, line := range []string{"# TYPE baton_reload_duration_seconds histogram", "# TYPE go_goroutines gauge",
				"# TYPE process_resident_memory_bytes gauge", "# TYPE process_cpu_seconds_total counter"} {
				if !strings.Contains(body, "\n"+line+"\n") {
					t.Errorf("/metrics lacks %q", line)
				}
			}
			b.Reload(t, 20*time.Second)
			m := metrics(t, base)
			if m[`baton_reloads_total{result="ok",trigger="signal"}`] != "1" || m["baton_generation"] != "2" || m["baton_reload_duration_seconds_count"] != "1" {
				t.Fatalf("metrics after a reload: %v", m)
			}

			code, body := httpDo(t, "POST", base+"/-/reload")
			switch {
			case !lifecycle && (code != http.StatusForbidden || !strings.Contains(body, "--admin-lifecycle")):
				t.Fatalf("POST /-/reload without --admin-lifecycle: %d %s, want 403 naming the flag", code, body)
			case lifecycle && (code != 200 || !strings.Contains(body, `"generation":3`)):
				t.Fatalf("POST /-/reload with --admin-lifecycle: %d %s, want 200 and generation 3", code, body)
			}
		})
	}
}

// Under ulimit -n 64, 500 connections left open on the admin endpoint,
// silent or kept alive after a request, hold at most its connection cap
// of descriptors: the master still answers status and reload --wait on
// its control socket, and the endpoint still answers a probe and a
// reload.
func TestAdminEndpointOutlivesIdleConnections(t *testing.T) {
	bin := harness.Build(t)
	b := harness.StartWith(t, harness.Setup{Wrap: []string{"sh", "-c", `ulimit -n 64 && exec "$0" "$@"`}},
		"--admin", "127.0.0.1:0", "--admin-lifecycle", "--listen", "http=tcp://127.0.0.1:0", "--", bin.TestWorker)
	b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "reload_complete" })
	addr := b.WaitFor(t, 5*time.Second, func(e harness.Event) bool { return e.Msg() == "admin endpoint" }).Str("addr")
	fds := func() int {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.PID()))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := fds()

	const open, capAt64 = 500, 64 / 4
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range open {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d to the admin endpoint: %v", i, err)
		}
		conns = append(conns, c)
		if i%5 == 0 { // one request, then left open
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /-/healthy HTTP/1.1\r\nHost: baton\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("GET /-/healthy on connection %d: %v %v", i, resp, err)
			}
		}
	}
	if n := fds(); n > before+capAt64+1 {
		t.Errorf("the master holds %d descriptors with %d admin connections open, %d before: want at most the cap (%d) more", n, open, before, capAt64)
	}
	if code, stdout, stderr := harness.Run(t, 20*time.Second, "status", "--pidfile", b.PIDFile); code != 0 || !strings.Contains(stdout, "serving      generation 1") {
		t.Fatalf("status with %d admin connections open: exit %d, %q %q", open, code, stdout, stderr)
	}
	if code, stdout, stderr := harness.Run(t, 30*time.Second, "reload", "--wait", "--pidfile", b.PIDFile); code != 0 || !strings.HasPrefix(stdout, "reloaded: generation 2") {
		t.Fatalf("reload --wait with %d admin connections open: exit %d, %q %q", open, code, stdout, stderr)
	}
	if code, body := httpDo(t, "GET", "http://"+addr+"/-/ready"); code != 200 {
		t.Fatalf("GET /-/ready with %d admin connections open: %d %s", open, code, body)
	}
	if code, body := httpDo(t, "POST", "http://"+addr+"/-/reload"); code != 200 || !strings.Contains(body, `"generation":3`) {
		t.Fatalf("POST /-/reload with %d admin connections open: %d %s", open, code, body)
	}
}

func httpDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metrics scrapes base/metrics into "name{labels}" → value.
func metrics(t *testing.T, base string) map[string]string {
	t.Helper()
	code, body := httpDo(t, "GET", base+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	m := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if name, value, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "baton_") {
			m[name] = value
		}
	}
	return m
}
