//go:build linux

package accepting

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/proc"
)

// The test binary doubles as the small programs the tests run, chosen by
// helperVar: a Go server, a process that only holds the socket, a wrapper
// that sets LISTEN_PID before exec'ing a server, and a Check run as
// another user.
const helperVar = "ACCEPTING_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperVar) {
	case "":
		os.Exit(m.Run())
	case "goserver":
		goServer()
	case "hold":
		// Holds fd 3 (inherited) and never waits on it.
		fmt.Println("holding")
		io.Copy(io.Discard, os.Stdin)
	case "exec":
		listenExec()
	case "check":
		checkAsHelper()
	case "tree":
		tree()
	}
	os.Exit(0)
}

// idleVar sets how many idle threads goServer starts (10 if unset).
const idleVar = "ACCEPTING_TEST_IDLE_THREADS"

// goServer is a Go HTTP server on fd 3 with at least 10 threads, as a busy
// Go server has: it holds the socket until stdin closes, then serves.
func goServer() {
	idle, err := strconv.Atoi(os.Getenv(idleVar))
	if err != nil {
		idle = 10
	}
	block, started := make(chan struct{}), make(chan struct{})
	for i := 0; i < idle; i++ {
		go func() {
			runtime.LockOSThread() // one thread each, parked
			started <- struct{}{}
			<-block
		}()
	}
	for i := 0; i < idle; i++ {
		<-started
	}
	f := os.NewFile(3, "listener")
	fmt.Println("holding")
	io.Copy(io.Discard, os.Stdin)
	l, err := net.FileListener(f)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	f.Close()
	fmt.Println("listening")
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }))
}

// listenExec execs its arguments with LISTEN_FDS=1 and LISTEN_PID set to
// its own PID, which exec keeps: the systemd protocol that gunicorn and
// puma take their sockets from (baton's exec shim does the same).
func listenExec() {
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Println(err)
		os.Exit(127)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, helperVar+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, "LISTEN_FDS=1", "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	err = syscall.Exec(path, os.Args[1:], env)
	fmt.Println(err)
	os.Exit(127)
}

// checkResult is what checkAsHelper prints.
type checkResult struct {
	Found      bool
	Err        string
	Permission bool // errors.Is(err, fs.ErrPermission)

	// Of a Wait with a 20 s deadline.
	WaitErr        string
	WaitPermission bool
	WaitTook       time.Duration
}

// checkAsHelper runs one Check of ACCEPTING_PID for the socket on fd 3.
func checkAsHelper() {
	socks, err := NewSockets(os.NewFile(3, "socket"))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	pid, _ := strconv.Atoi(os.Getenv("ACCEPTING_PID"))
	_, found, err := Check(pid, socks)
	r := checkResult{Found: found, Permission: errors.Is(err, fs.ErrPermission)}
	if err != nil {
		r.Err = err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = Wait(ctx, pid, socks, 0)
	r.WaitTook = time.Since(start)
	r.WaitPermission = errors.Is(err, fs.ErrPermission) && ctx.Err() == nil
	if err != nil {
		r.WaitErr = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

// tree is a generation of three: itself, holding fd 3; a child in its
// process group that holds it too; and a child in a session of its own
// (out of the group, still a descendant) that serves it once stdin, which
// all three share, closes. It prints "children GROUPED SESSION".
func tree() {
	self, _ := os.Executable()
	var pids []string
	var last *exec.Cmd
	for _, c := range []struct {
		helper string
		setsid bool
	}{{"hold", false}, {"goserver", true}} {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), helperVar+"="+c.helper)
		cmd.ExtraFiles = []*os.File{os.NewFile(3, "socket")}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		// Killing the test's process group misses the session child:
		// it dies with its parent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: c.setsid, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		pids = append(pids, strconv.Itoa(cmd.Process.Pid))
		last = cmd
	}
	fmt.Println("children " + strings.Join(pids, " "))
	last.Wait() // the session child serves until the test ends
}

// child is a real process started by a test with a socket as its fd 3, in
// a process group of its own as baton starts a worker.
type child struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	printed chan struct{} // a line was printed
	mu      sync.Mutex
	out     bytes.Buffer
}

// start runs name with args, the socket as fd 3, stdin a pipe the test
// closes to let the program go on, and stdout and stderr read line by
// line. The whole process group is killed when the test ends.
func start(t testing.TB, sock *os.File, env []string, name string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &child{t: t, cmd: cmd, printed: make(chan struct{}, 1)}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.printed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		r.Close()
		<-done
	})
	return p
}

// startGo runs the test binary as one of its helpers.
func startGo(t testing.TB, sock *os.File, helper string) *child {
	t.Helper()
	return start(t, sock, []string{helperVar + "=" + helper}, os.Args[0])
}

// startExec runs args with LISTEN_FDS=1 and LISTEN_PID, the way baton
// runs a worker that speaks systemd's protocol (gunicorn, puma).
func startExec(t testing.TB, sock *os.File, args ...string) *child {
	t.Helper()
	return start(t, sock, []string{helperVar + "=exec"}, os.Args[0], args...)
}

func (p *child) pid() int { return p.cmd.Process.Pid }

func (p *child) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect waits until the program has printed n lines containing want.
func (p *child) expect(want string, n int) {
	p.t.Helper()
	p.await(fmt.Sprintf("%d lines %q", n, want), func(lines []string) bool {
		for _, l := range lines {
			if strings.Contains(l, want) {
				n--
			}
		}
		return n <= 0
	})
}

// expectLine waits for a line starting with prefix and returns it.
func (p *child) expectLine(prefix string) string {
	p.t.Helper()
	var found string
	p.await(fmt.Sprintf("a line %q…", prefix), func(lines []string) bool {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// await waits until ok holds of the lines printed so far, re-checking at
// each new line.
func (p *child) await(what string, ok func(lines []string) bool) {
	p.t.Helper()
	deadline := time.After(30 * time.Second)
	for !ok(strings.Split(p.output(), "\n")) {
		select {
		case <-p.printed:
		case <-deadline:
			p.t.Fatalf("no %s from %s in 30s; output:\n%s", what, p.cmd.Path, p.output())
		}
	}
}

// release closes the program's stdin: it goes on to serve.
func (p *child) release() { p.stdin.Close() }

// listen returns a TCP listener on loopback and a file of it to pass.
func listen(t testing.TB) (*net.TCPListener, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); l.Close() })
	return l, f
}

func sockets(t testing.TB, conns ...syscall.Conn) *Sockets {
	t.Helper()
	s, err := NewSockets(conns...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFound polls Check as the master would until it finds a waiter.
func waitFound(t testing.TB, p *child, socks *Sockets) Waiter {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		w, found, err := Check(p.pid(), socks)
		if found {
			return w
		}
		last = err
		time.Sleep(DefaultInterval) // the master's polling interval, not a synchronisation
	}
	t.Fatalf("no process of the generation of pid %d waits on the socket after 30s (last error %v); output:\n%s", p.pid(), last, p.output())
	return Waiter{}
}

// watchFound polls a Watcher's Check as Wait would until it finds a
// waiter.
func watchFound(t testing.TB, p *child, wt *Watcher) Waiter {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		w, found, err := wt.Check()
		if found {
			return w
		}
		last = err
		time.Sleep(DefaultInterval) // the master's polling interval, not a synchronisation
	}
	t.Fatalf("a Watcher of pid %d saw no process of the generation wait on the socket after 30s (last error %v); output:\n%s", p.pid(), last, p.output())
	return Waiter{}
}

// waitFoundPID polls Check of the generation of pid until it finds a
// waiter.
func waitFoundPID(t testing.TB, pid int, socks *Sockets) Waiter {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if w, found, _ := Check(pid, socks); found {
			return w
		}
		time.Sleep(DefaultInterval)
	}
	t.Fatalf("pid %d does not wait on the socket after 30s", pid)
	return Waiter{}
}

// notFound asserts that Check sees no waiter in p's generation, and
// could inspect all of it.
func notFound(t testing.TB, p *child, socks *Sockets, why string) {
	t.Helper()
	w, found, err := Check(p.pid(), socks)
	if err != nil {
		t.Fatalf("Check(%d): %v", p.pid(), err)
	}
	if found {
		t.Fatalf("%s, yet Check found %v", why, w)
	}
}

// get answers that the server serves: one connection, one reply.
func get(t testing.TB, l net.Listener, request string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, request)
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Fatalf("no answer from the server: %v", err)
	}
	if !bytes.Contains(b, []byte("hello")) {
		t.Fatalf("server answered %q", b)
	}
}

func testdata(name string) string {
	p, _ := filepath.Abs(filepath.Join("testdata", name))
	return p
}

// need returns the path of a runtime, skipping the test when it is
// missing: CI installs each from Debian (the package named).
func need(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (Debian package %s)", name, pkg)
	}
	return p
}

// python returns a python3 that can import module ("" for none), skipping
// the test when there is none.
func python(t testing.TB, module, pkg string) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if module == "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
			continue
		}
		if exec.Command(p, "-c", "import "+module).Run() == nil {
			return p
		}
	}
	if module == "" {
		t.Skip("python3 is not installed (Debian package python3)")
	}
	t.Skipf("no python3 with %s is installed (Debian package %s)", module, pkg)
	return ""
}

// parentOf reads the parent PID from /proc/PID/stat.
func parentOf(t testing.TB, pid int) int {
	t.Helper()
	s, err := proc.ReadStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return s.PPID
}

func threads(pid int) int {
	d, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(d)
}
