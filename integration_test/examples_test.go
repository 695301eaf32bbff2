package integration_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/harness"
	"github.com/baton-sh/baton/internal/loadgen"
)

// The programs in examples/, each run under the real baton binary with
// the command line their documentation gives, reloaded under load.

// ecoBuildGoWorker builds examples/goworker with go build.
func ecoBuildGoWorker(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "goworker")
	cmd := exec.Command("go", "build", "-o", out, "./examples/goworker")
	cmd.Dir = harness.ModuleRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/goworker: %v\n%s", err, b)
	}
	return out
}

func TestExampleGoWorker(t *testing.T) {
	worker := ecoBuildGoWorker(t)

	t.Run("under baton", func(t *testing.T) {
		// examples/goworker/main.go: baton --listen http=tcp://127.0.0.1:8080 -- /tmp/goworker
		b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", worker)
		stopCleanly(t, b, reloadsUnderLoad(t, b, 3))
	})

	// The same binary without baton binds its own address, serves, and
	// exits 0 on SIGTERM.
	t.Run("without baton", func(t *testing.T) {
		addr := freePort(t)
		ecoStandalone(t, addr, worker, "-addr", addr)
	})
}

// ecoPython3 is the interpreter the Python example runs with: Debian's, or
// the first in PATH.
func ecoPython3(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is not installed")
	}
	return p
}

func TestExamplePythonWorker(t *testing.T) {
	python := ecoPython3(t)
	script := filepath.Join(harness.ModuleRoot(), "examples", "python", "worker.py")

	t.Run("under baton", func(t *testing.T) {
		// examples/python/worker.py: baton --listen http=tcp://127.0.0.1:8000 -- python3 examples/python/worker.py
		b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", python, script)
		stopCleanly(t, b, reloadsUnderLoad(t, b, 3))
		if out := b.Output(); strings.Contains(out, "Traceback") {
			t.Fatalf("the Python worker raised:\n%s", out)
		}
	})

	// A drain that closed idle keep-alive connections at once lost the
	// POST a client had just sent on one: only keep-alive loops here, so
	// every connection is one.
	t.Run("keep-alive POSTs", func(t *testing.T) {
		b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", python, script)
		load, err := loadgen.Start(loadgen.Config{URL: "http://" + b.Addr(t, "http") + "/", KeepAlive: 8, PostBody: []byte("keep-alive"), MaxDuration: 2 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { load.Stop() })
		harness.Eventually(t, 10*time.Second, "load under way", func() bool { return load.Done() >= 200 })
		stopCleanly(t, b, reloadsWithLoad(t, b, 5, load))
	})

	// The drain by hand, connection by connection: an idle keep-alive
	// connection is closed, and a connection accepted before the drain
	// whose request only arrives during it is answered, with
	// "Connection: close", by the draining generation.
	t.Run("drain", func(t *testing.T) {
		b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0", "--", python, script)
		addr := b.Addr(t, "http")
		old := b.WorkerPID(t, 1)
		request := "GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"

		idle := ecoDial(t, addr)
		if resp := ecoRoundTrip(t, idle, request); !strings.HasSuffix(resp, fmt.Sprintf("gen=1 pid=%d\n", old)) {
			t.Fatalf("first answer: %q", resp)
		}
		fds := ecoOpenFDs(old)
		pending := ecoDial(t, addr)
		harness.Eventually(t, 10*time.Second, "generation 1 accepts the connection", func() bool {
			return ecoOpenFDs(old) > fds
		})

		b.Signal(t, syscall.SIGHUP)
		b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "draining" && e.Int("pid") == old })
		idle.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := idle.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("idle keep-alive connection during the drain: read %d, %v; want it closed", n, err)
		}
		resp := ecoRoundTrip(t, pending, request)
		if !strings.Contains(resp, "Connection: close\r\n") || !strings.HasSuffix(resp, fmt.Sprintf("gen=1 pid=%d\n", old)) {
			t.Fatalf("request on a connection accepted before the drain: %q", resp)
		}
		exit := b.WaitFor(t, 20*time.Second, func(e harness.Event) bool { return e.Kind() == "worker_exited" && e.Int("pid") == old })
		if exit.Str("how") != "exited with status 0" {
			t.Fatalf("drained worker: %v", exit)
		}
		if out := b.Output(); strings.Contains(out, "Traceback") {
			t.Fatalf("the Python worker raised:\n%s", out)
		}
	})

	t.Run("without baton", func(t *testing.T) {
		addr := freePort(t)
		ecoStandalone(t, addr, python, script, addr)
	})
}

func ecoDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ecoRoundTrip writes request on c and reads one response, whose body is
// announced by Content-Length.
func ecoRoundTrip(t *testing.T, c net.Conn, request string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s\r\n", resp.Status)
	resp.Header.Write(&sb)
	if resp.Close {
		sb.WriteString("Connection: close\r\n")
	}
	sb.WriteString("\r\n")
	sb.Write(body)
	return sb.String()
}

// ecoOpenFDs counts the open descriptors of pid.
func ecoOpenFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func TestExampleGunicorn(t *testing.T) {
	gunicorn, err := exec.LookPath("gunicorn")
	if err != nil {
		t.Fatal("gunicorn is not installed (Debian package gunicorn; scripts/test installs it)")
	}
	t.Setenv("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in examples/
	// examples/gunicorn/app.py: baton --listen http=tcp://127.0.0.1:8000 --dir examples/gunicorn --
	//     gunicorn --workers 2 --graceful-timeout 25 app:app
	b := harness.Start(t, "--listen", "http=tcp://127.0.0.1:0",
		"--dir", filepath.Join(harness.ModuleRoot(), "examples", "gunicorn"), "--",
		gunicorn, "--workers", "2", "--graceful-timeout", "25", "app:app")
	if body := get(t, "http://"+b.Addr(t, "http")+"/"); !strings.HasPrefix(body, "gen=1 pid=") {
		t.Fatalf("examples/gunicorn/app.py answered %q", body)
	}
	stopCleanly(t, b, reloadsUnderLoad(t, b, 3))
}

// ecoStandalone runs a worker without baton, told to bind addr: it must
// answer there, and exit with status 0 on SIGTERM.
func ecoStandalone(t *testing.T, addr, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out ecoBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), out.String())
		}
	})
	ecoRequireAnswer(t, "http://"+addr+"/", fmt.Sprintf("gen=none pid=%d\n", cmd.Process.Pid))
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("%s after SIGTERM: %v, want exit status 0", filepath.Base(name), waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGTERM", filepath.Base(name))
	}
}

// ecoRequireAnswer polls url until it answers 200 with want.
func ecoRequireAnswer(t *testing.T, url, want string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	harness.Eventually(t, 20*time.Second, "answer "+strconv.Quote(want)+" from "+url, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(body) == want
	})
}
