package sockets_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/envnames"
	"github.com/baton-sh/baton/internal/reexec"
	"github.com/baton-sh/baton/internal/sockets"
	"github.com/baton-sh/baton/listener"
)

// workerModeEnv makes the test binary act as a worker (see runWorker)
// instead of running tests.
const workerModeEnv = "BATON_LISTENER_TEST_WORKER"

func TestMain(m *testing.M) {
	// Started with ShimVar, the binary becomes the worker right here.
	reexec.Init()
	if os.Getenv(workerModeEnv) != "" {
		os.Exit(runWorker())
	}
	os.Exit(m.Run())
}

// workerReport is what runWorker prints for the test to check.
type workerReport struct {
	PID       int
	ListenPID string
	Shim      bool
	Names     []string
	Addr      string
	Err       string
}

// runWorker picks up its sockets the way a baton worker does, prints a
// report, and answers one connection on the socket named "web".
func runWorker() int {
	r := workerReport{PID: os.Getpid(), ListenPID: os.Getenv("LISTEN_PID")}
	_, r.Shim = os.LookupEnv(envnames.ExecShim)
	if names := os.Getenv("LISTEN_FDNAMES"); names != "" && r.ListenPID == strconv.Itoa(r.PID) {
		r.Names = strings.Split(names, ":")
	}
	slices.Sort(r.Names)
	var l net.Listener
	var err error
	if slices.Contains(r.Names, "web") {
		// The fallback address is unusable: only the inherited socket works.
		l, err = listener.Listen("web", "tcp", "192.0.2.1:1")
	}
	if err != nil {
		r.Err = err.Error()
	} else if l != nil {
		r.Addr = l.Addr().String()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	if l == nil {
		return 0
	}
	c, err := l.Accept()
	if err != nil {
		return 1
	}
	fmt.Fprintf(c, "pid=%d\n", os.Getpid())
	c.Close()
	return 0
}

// quickExit spares a race-enabled child the race runtime's 1s pause at
// exit.
func quickExit() string {
	return strings.TrimSpace("GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0")
}

func TestWorkerEnv(t *testing.T) {
	web := &sockets.Socket{Spec: sockets.Spec{Name: "web", Network: "tcp", Address: "127.0.0.1:8080"}}
	dns := &sockets.Socket{Spec: sockets.Spec{Name: "dns", Network: "udp", Address: "127.0.0.1:53"}}
	ctl := &sockets.Socket{Spec: sockets.Spec{Name: "ctl", Network: "unix", Address: "/run/ctl.sock"}}
	shimKey, _, _ := strings.Cut(sockets.ShimVar("/usr/bin/app"), "=")

	tests := []struct {
		name    string
		base    []string
		sockets []*sockets.Socket
		notify  string
		want    []string
	}{
		{
			name: "nothing to add",
			base: []string{"PATH=/bin", "HOME=/root"},
			want: []string{"PATH=/bin", "HOME=/root"},
		},
		{
			name:    "empty base",
			base:    nil,
			sockets: []*sockets.Socket{web},
			notify:  "/run/baton/notify.sock",
			want:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web", "NOTIFY_SOCKET=/run/baton/notify.sock"},
		},
		{
			name:    "names in socket order",
			base:    []string{"PATH=/bin"},
			sockets: []*sockets.Socket{web, dns, ctl},
			notify:  "@baton/notify",
			want:    []string{"PATH=/bin", "LISTEN_FDS=3", "LISTEN_FDNAMES=web:dns:ctl", "NOTIFY_SOCKET=@baton/notify"},
		},
		{
			name:    "order follows the sockets, not the names",
			sockets: []*sockets.Socket{ctl, web},
			want:    []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=ctl:web"},
		},
		{
			name: "inherited protocol variables are dropped",
			base: []string{
				"LISTEN_FDS=7", "PATH=/bin", "LISTEN_FDNAMES=a:b", "LISTEN_PID=1",
				"NOTIFY_SOCKET=/run/systemd/notify", shimKey + "=/old/worker",
				"LISTEN_FDS=9", "USER=app",
			},
			sockets: []*sockets.Socket{dns},
			notify:  "/tmp/n.sock",
			want:    []string{"PATH=/bin", "USER=app", "LISTEN_FDS=1", "LISTEN_FDNAMES=dns", "NOTIFY_SOCKET=/tmp/n.sock"},
		},
		{
			name: "dropped even with no sockets and no notify socket",
			base: []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=x:y", "LISTEN_PID=12", "NOTIFY_SOCKET=/n", "TERM=dumb"},
			want: []string{"TERM=dumb"},
		},
		{
			name: "only exact names are dropped",
			base: []string{
				"LISTEN_FDS_X=1", "XLISTEN_PID=2", "NOTIFY_SOCKETS=3", "listen_fds=4",
				"LISTEN_FDS", "NOTIFY_SOCKET", "=", "A=LISTEN_FDS=1", "",
			},
			want: []string{"LISTEN_FDS_X=1", "XLISTEN_PID=2", "NOTIFY_SOCKETS=3", "listen_fds=4", "=", "A=LISTEN_FDS=1", ""},
		},
		{
			name:   "values are kept as they are",
			base:   []string{"A=b=c", "EMPTY="},
			notify: "/x",
			want:   []string{"A=b=c", "EMPTY=", "NOTIFY_SOCKET=/x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := slices.Clone(tt.base)
			got := sockets.WorkerEnv(base, tt.sockets, tt.notify)
			if !slices.Equal(got, tt.want) {
				t.Errorf("WorkerEnv(%q, …, %q) =\n  %q\nwant\n  %q", tt.base, tt.notify, got, tt.want)
			}
			if !slices.Equal(base, tt.base) {
				t.Errorf("WorkerEnv changed its base to %q", base)
			}
			for _, kv := range got {
				if strings.HasPrefix(kv, "LISTEN_PID"+"=") {
					t.Errorf("WorkerEnv set %q: LISTEN_PID is the shim's to set", kv)
				}
			}
		})
	}
}

func TestShimVar(t *testing.T) {
	for _, worker := range []string{"/usr/bin/app", "./worker", "/path with spaces/w=x"} {
		got := sockets.ShimVar(worker)
		if want := envnames.ExecShim + "=" + worker; got != want {
			t.Errorf("ShimVar(%q) = %q, want %q", worker, got, want)
		}
		// WorkerEnv drops the shim's variables inherited from baton's
		// parent: a worker must not turn into a shim again, nor take a
		// umask --umask did not give.
		if env := sockets.WorkerEnv([]string{got, "A=1", sockets.UmaskVar(0o77)}, nil, ""); !slices.Equal(env, []string{"A=1"}) {
			t.Errorf("WorkerEnv kept %q: %q", got, env)
		}
	}
}

// TestShimHandoff runs the whole socket-activation handoff: the master
// binds, starts a baton binary with WorkerEnv and ShimVar and the socket as
// fd 3; the shim sets LISTEN_PID to its PID and execs the worker, which
// finds the socket under its name and answers on it.
func TestShimHandoff(t *testing.T) {
	spec, err := sockets.ParseSpec("web=tcp://127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := sockets.Bind(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	base := append(os.Environ(),
		workerModeEnv+"=1", quickExit(),
		// What baton itself may have inherited: must not reach the worker.
		"LISTEN_FDS=5", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b:c:d:e")
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(sockets.WorkerEnv(base, []*sockets.Socket{sock}, ""), sockets.ShimVar(self))
	cmd.ExtraFiles = []*os.File{sock.File}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var r workerReport
	if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&r); err != nil {
		t.Fatalf("reading the worker's report: %v", err)
	}
	if r.Err != "" {
		t.Fatalf("worker: %s", r.Err)
	}
	if r.PID != cmd.Process.Pid {
		t.Errorf("worker runs as pid %d, want the shim's pid %d (exec in place)", r.PID, cmd.Process.Pid)
	}
	if r.ListenPID != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("worker got LISTEN_PID=%q, want %d", r.ListenPID, cmd.Process.Pid)
	}
	if r.Shim {
		t.Errorf("worker still has %s set", envnames.ExecShim)
	}
	if !slices.Equal(r.Names, []string{"web"}) {
		t.Errorf("worker inherited sockets %q, want [web]", r.Names)
	}
	if r.Addr != sock.Addr.String() {
		t.Errorf("worker listens on %s, want the master's socket %s", r.Addr, sock.Addr)
	}

	c, err := net.DialTimeout("tcp", sock.Addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from the worker: %v", err)
	}
	if want := fmt.Sprintf("pid=%d\n", cmd.Process.Pid); line != want {
		t.Errorf("worker answered %q, want %q", line, want)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("worker: %v", err)
	}
}

// TestShimWithoutSockets checks that the shim sets LISTEN_PID only when
// there are sockets to go with it, and fails like a shell when the worker
// cannot be executed.
func TestShimWithoutSockets(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	base := append(os.Environ(), workerModeEnv+"=1", quickExit(), "LISTEN_PID=1")
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(sockets.WorkerEnv(base, nil, "/nonexistent/notify.sock"), sockets.ShimVar(self))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("worker: %v", err)
	}
	var r workerReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("worker report %q: %v", out, err)
	}
	if r.ListenPID != "" || len(r.Names) != 0 || r.Shim || r.Err != "" {
		t.Errorf("worker started without sockets reports %+v, want no LISTEN_PID, no sockets, no shim variable", r)
	}

	cmd = exec.Command(self, "-test.run=^$")
	cmd.Env = append(sockets.WorkerEnv(base, nil, ""), sockets.ShimVar("/nonexistent/worker"))
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 127 {
		t.Errorf("shim with a missing worker exited with %d (%v), want 127", code, err)
	}
	if want := "baton: exec /nonexistent/worker: no such file or directory"; !strings.Contains(string(out), want) {
		t.Errorf("shim with a missing worker said %q, want %q", out, want)
	}
}
