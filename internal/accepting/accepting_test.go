//go:build linux

package accepting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runtimeCase is a real server, started on a passed socket as baton would
// start it: it holds the socket (and says "holding") until its stdin
// closes, then serves.
type runtimeCase struct {
	name  string
	start func(t testing.TB, l *net.TCPListener, sock *os.File) *child
	// holders is how many "holding" lines mean that every process that
	// will serve is up and holds the socket without waiting on it.
	holders int
	via     Via
	// child: the waiter is a child of the process baton started (a
	// pre-fork server's worker), not that process itself.
	child bool
	// request is what the test sends to see an answer.
	request string
}

const httpGet = "GET / HTTP/1.0\r\nHost: x\r\n\r\n"

var runtimes = []runtimeCase{
	{
		name: "node",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			node := need(t, "node", "nodejs")
			return start(t, sock, nil, node, testdata("server.js"))
		},
		holders: 1, via: Epoll,
	},
	{
		name: "go",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			return startGo(t, sock, "goserver")
		},
		holders: 1, via: Epoll, request: httpGet,
	},
	{
		name: "uvicorn (asyncio)",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			py := python(t, "uvicorn", "python3-uvicorn")
			return start(t, sock, nil, py, "-m", "uvicorn", "--fd", "3", "--app-dir", testdata(""),
				"--lifespan", "on", "--no-access-log", "uvicorn_app:app")
		},
		holders: 1, via: Epoll, request: httpGet,
	},
	{
		name: "gunicorn gthread",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			gunicorn := need(t, "gunicorn", "gunicorn")
			return startExec(t, sock, gunicorn, "--worker-class", "gthread", "--workers", "2",
				"--threads", "4", "--chdir", testdata(""), "gunicorn_app:app")
		},
		holders: 2, via: Epoll, child: true, request: httpGet,
	},
	{
		name: "gunicorn sync",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			gunicorn := need(t, "gunicorn", "gunicorn")
			return startExec(t, sock, gunicorn, "--workers", "2",
				"--chdir", testdata(""), "gunicorn_app:app")
		},
		holders: 2, via: Select, child: true, request: httpGet,
	},
	{
		name: "python blocking accept",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			return start(t, sock, nil, python(t, "", ""), testdata("accept.py"))
		},
		holders: 1, via: Accept,
	},
	{
		name: "python socketserver",
		start: func(t testing.TB, _ *net.TCPListener, sock *os.File) *child {
			return start(t, sock, nil, python(t, "", ""), testdata("poll_server.py"))
		},
		holders: 1, via: Poll,
	},
	{
		name: "puma",
		start: func(t testing.TB, l *net.TCPListener, sock *os.File) *child {
			puma := need(t, "puma", "puma")
			// puma uses an activated socket only for a bind of the same
			// address.
			return startExec(t, sock, puma, "--threads", "1:2",
				"--bind", "tcp://"+l.Addr().String(), "--dir", testdata(""), testdata("config.ru"))
		},
		holders: 1, via: Select, request: httpGet,
	},
}

// Each runtime holds the socket without waiting on it first: not found.
// Once it serves, a Watcher that has watched it since it held the socket
// finds the process that waits, and how, as the master's Wait would.
func TestRuntimes(t *testing.T) {
	for _, rc := range runtimes {
		t.Run(rc.name, func(t *testing.T) {
			t.Parallel()
			l, sock := listen(t)
			socks := sockets(t, l)
			p := rc.start(t, l, sock)
			p.expect("holding", rc.holders)
			notFound(t, p, socks, "every process holds the socket and none serves it yet")
			wt := NewWatcher(p.pid(), socks)
			defer wt.Close()
			for range 3 {
				if w, found, err := wt.Check(); found || err != nil {
					t.Fatalf("Watcher Check of a generation holding the socket = %v, %v, %v", w, found, err)
				}
			}

			p.release()
			w := watchFound(t, p, wt)
			t.Logf("%s: %v (%d threads in pid %d)", rc.name, w, threads(w.PID), w.PID)
			if w.Via != rc.via {
				t.Errorf("found %v, want a waiter by %v", w, rc.via)
			}
			if w.Socket != 0 || w.Inode == 0 {
				t.Errorf("found %v: want socket 0 and its inode", w)
			}
			if rc.child {
				if w.PID == p.pid() || parentOf(t, w.PID) != p.pid() {
					t.Errorf("found %v, want a child of pid %d", w, p.pid())
				}
			} else if w.PID != p.pid() {
				t.Errorf("found %v, want pid %d", w, p.pid())
			}
			if w.TID == 0 || (w.Via == Epoll) != (w.EpollFD != 0) {
				t.Errorf("found %v: want the waiting thread, and the epoll fd with epoll", w)
			}
			req := rc.request
			if req == "" {
				req = "\n"
			}
			get(t, l, req) // it does serve the socket
		})
	}
}

// A socket shared by two generations: the old one serves it, the new one
// only holds it so far. Only the processes of the generation asked about
// count, so the new one is not ready, whatever the old one does.
func TestOnlyTheGenerationAskedAboutCounts(t *testing.T) {
	node := need(t, "node", "nodejs")
	l, sock := listen(t)
	socks := sockets(t, l)
	old := start(t, sock, nil, node, testdata("server.js"))
	old.expect("holding", 1)
	old.release()
	w := waitFound(t, old, socks)
	if w.PID != old.pid() {
		t.Fatalf("old generation: found %v, want pid %d", w, old.pid())
	}

	holder := startGo(t, sock, "hold")
	holder.expect("holding", 1)
	notFound(t, holder, socks, "the new generation only holds the socket the old one serves")

	// Not even a descendant of the old generation would make the new
	// one ready: only the new generation's tree is looked at.
	w, found, err := Check(old.pid(), socks)
	if err != nil || !found || w.PID != old.pid() {
		t.Fatalf("old generation: Check = %v, %v, %v; want it found serving", w, found, err)
	}
}

// The generation is the process baton started and all its descendants,
// even one that left the process group (setsid), with or without the
// kernel's children files.
func TestDescendantOutsideTheGroup(t *testing.T) {
	for _, children := range []bool{true, false} {
		t.Run(fmt.Sprintf("children files %v", children), func(t *testing.T) {
			if children && !ChildrenFiles() {
				t.Skip("this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)")
			}
			if !children {
				useChildren = func() bool { return false }
				t.Cleanup(func() { useChildren = ChildrenFiles })
			}
			l, sock := listen(t)
			socks := sockets(t, l)
			root := startGo(t, sock, "tree")
			line := root.expectLine("children ")
			var grouped, session int
			fmt.Sscanf(line, "children %d %d", &grouped, &session)
			t.Cleanup(func() { syscall.Kill(session, syscall.SIGKILL) })
			root.expect("holding", 2) // the children; root holds fd 3 from the start
			notFound(t, root, socks, "three processes hold the socket, none serves it")

			root.release()
			w := waitFound(t, root, socks)
			if w.PID != session || w.Via != Epoll {
				t.Fatalf("found %v, want pid %d (the child in its own session) by epoll", w, session)
			}
		})
	}
}

// A datagram server waits in recvfrom, not accept.
func TestDatagramServerInRecv(t *testing.T) {
	py := python(t, "", "")
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sock, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	socks := sockets(t, c)
	p := start(t, sock, nil, py, "-c", `
import socket, sys
s = socket.socket(fileno=3)
print("holding", flush=True)
sys.stdin.read()
s.setblocking(True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
`)
	p.expect("holding", 1)
	notFound(t, p, socks, "the process holds the UDP socket and does not read it yet")
	p.release()
	if w := waitFound(t, p, socks); w.Via != Recv || w.PID != p.pid() {
		t.Fatalf("found %v, want pid %d in recv", w, p.pid())
	}
}

// Entries of /proc that Check may not read are reported, not skipped in
// silence and never a panic: here a Check made as nobody of a process of
// root's (or, not as root, of PID 1).
func TestPermissionDenied(t *testing.T) {
	l, sock := listen(t)
	if os.Geteuid() != 0 {
		st, err := os.Stat("/proc/1")
		if err != nil || st.Sys().(*syscall.Stat_t).Uid == uint32(os.Geteuid()) {
			t.Skip("no process of another user to be denied: PID 1 is ours, and only root can run a Check as another user")
		}
		_, found, err := Check(1, sockets(t, l))
		if found || !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("Check(1) as uid %d = %v, %v; want not found and a permission error", os.Geteuid(), found, err)
		}
		return
	}
	served := startGo(t, sock, "goserver")
	served.expect("holding", 1)
	served.release()
	served.expect("listening", 1)

	// The test binary, where nobody may run it.
	dir, err := os.MkdirTemp("", "accepting-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "checker")
	if b, err := os.ReadFile(os.Args[0]); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), helperVar+"=check", "ACCEPTING_PID="+strconv.Itoa(served.pid()))
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("checker as nobody: %v: %s", err, out)
	}
	var r checkResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("checker printed %q", out)
	}
	if r.Found || !r.Permission {
		t.Fatalf("Check as nobody of root's serving pid %d = %+v; want not found and a permission error", served.pid(), r)
	}
	// Wait gives up after DeniedGrace, well before its deadline, so the
	// master can say why it cannot watch.
	if !r.WaitPermission || r.WaitTook < DeniedGrace || r.WaitTook > 10*time.Second {
		t.Fatalf("Wait as nobody of root's serving pid %d returned after %v: %s; want a permission error after %v", served.pid(), r.WaitTook, r.WaitErr, DeniedGrace)
	}
	t.Logf("as nobody: %s; Wait gave up after %v", r.Err, r.WaitTook.Round(time.Millisecond))
}

// Wait returns the waiter once the server serves, and the context's error,
// with the last Check's, when it never does.
func TestWait(t *testing.T) {
	l, sock := listen(t)
	socks := sockets(t, l)

	holder := startGo(t, sock, "hold")
	holder.expect("holding", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if w, err := Wait(ctx, holder.pid(), socks, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on a holder = %v, %v; want the deadline", w, err)
	}

	server := startGo(t, sock, "goserver")
	server.expect("holding", 1)
	got := make(chan Waiter, 1)
	go func() {
		w, err := Wait(context.Background(), server.pid(), socks, 0)
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	server.release()
	select {
	case w := <-got:
		if w.PID != server.pid() || w.Via != Epoll {
			t.Fatalf("Wait found %v, want pid %d by epoll", w, server.pid())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return in 30s after the server started serving")
	}
}

func TestNeverReadyHint(t *testing.T) {
	l, sock := listen(t)
	socks := sockets(t, l)
	p := startGo(t, sock, "goserver")
	p.expect("holding", 1)
	if h := NeverReadyHint(p.pid(), socks); h != "" {
		t.Fatalf("hint for a holder: %q, want none", h)
	}
	p.release()
	waitFound(t, p, socks)
	h := NeverReadyHint(p.pid(), socks)
	if !strings.Contains(h, "never sent READY=1") || !strings.Contains(h, fmt.Sprintf("pid %d", p.pid())) {
		t.Fatalf("hint %q", h)
	}
}

// NewSockets reads the inode without Fd, which would clear O_NONBLOCK on
// a socket the master shares with its workers.
func TestNewSocketsKeepsTheMode(t *testing.T) {
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	raw, _ := l.SyscallConn()
	flags := func() (fl int) {
		raw.Control(func(fd uintptr) { fl, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
		return fl
	}
	if flags()&unix.O_NONBLOCK == 0 {
		t.Fatal("a Go listener starts non-blocking")
	}
	// Files made of the master's socket, as the master keeps them.
	f := os.NewFile(uintptr(dupNonblocking(t, raw)), "held")
	defer f.Close()
	s, err := NewSockets(l, f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 1 {
		t.Fatalf("two files of one socket: Len = %d, want 1", s.Len())
	}
	if flags()&unix.O_NONBLOCK == 0 {
		t.Fatal("NewSockets switched the shared socket to blocking mode")
	}

	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if _, err := NewSockets(r); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("NewSockets(pipe) = %v, want not a socket", err)
	}
}

func dupNonblocking(t *testing.T, raw syscall.RawConn) int {
	var fd int
	var err error
	raw.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestParseWatch(t *testing.T) {
	s := NewWatcher(1, nil)
	for _, tc := range []struct {
		line string
		ok   bool
		want watch
	}{
		{"tfd:        3 events:       19 data:                3  pos:0 ino:156bd sdev:9", true,
			watch{tfd: 3, events: 0x19, ino: 0x156bd, dev: 9, haveIno: true, haveDev: true}},
		{"tfd:       21 events: 80002005 data:    7f00deadbeef  pos:0 ino:4a2f1 sdev:100009", true,
			watch{tfd: 21, events: 0x80002005, ino: 0x4a2f1, dev: 0x100009, haveIno: true, haveDev: true}},
		// Kernels before ino and sdev.
		{"tfd:        5 events:        1 data:                0", true, watch{tfd: 5, events: 1}},
		{"ino:\t1038", false, watch{}},
		{"pos:\t0", false, watch{}},
		{"tfd: x events: 1", false, watch{}},
	} {
		got, ok := s.parseWatch([]byte(tc.line))
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseWatch(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSocketInode(t *testing.T) {
	for _, tc := range []struct {
		target string
		ino    uint64
		ok     bool
	}{
		{"socket:[87741]", 87741, true},
		{"socket:[18446744073709551615]", 0, false}, // 20 digits: refused, not overflowed
		{"socket:[]", 0, false},
		{"anon_inode:[eventpoll]", 0, false},
		{"pipe:[87742]", 0, false},
		{"/dev/null", 0, false},
	} {
		ino, ok := socketInode([]byte(tc.target))
		if ino != tc.ino || ok != tc.ok {
			t.Errorf("socketInode(%q) = %d, %v; want %d, %v", tc.target, ino, ok, tc.ino, tc.ok)
		}
	}
}

// A Watcher keeps /proc files open across Checks; they follow the
// process through an exec (the address space behind /proc/PID/mem
// changes), and are closed once the process is gone or on Close.
func TestWatcherFollowsExecAndReleasesFiles(t *testing.T) {
	py := python(t, "", "")
	l, sock := listen(t)
	socks := sockets(t, l)
	p := start(t, sock, nil, py, testdata("exec_after.py"), py, testdata("poll_server.py"))
	p.expect("holding", 1)
	before := openProcFiles(t)
	w := NewWatcher(p.pid(), socks)
	defer w.Close()
	for range 3 {
		if found, ok, err := w.Check(); ok || err != nil {
			t.Fatalf("Check of a process polling its stdin = %v, %v, %v", found, ok, err)
		}
	}
	if w.Held() < 3 { // task dir, syscall, children, mem
		t.Fatalf("Watcher holds %d files after 3 Checks of a process in poll, want its task, syscall, children and mem files", w.Held())
	}

	p.release() // it execs poll_server.py, which serves at once
	deadline := time.Now().Add(30 * time.Second)
	for {
		found, ok, err := w.Check()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if found.Via != Poll || found.PID != p.pid() {
				t.Fatalf("found %v, want pid %d in poll", found, p.pid())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec'd server was not seen in 30s; output:\n%s", p.output())
		}
		time.Sleep(DefaultInterval)
	}
	get(t, l, "\n")

	syscall.Kill(-p.pid(), syscall.SIGKILL)
	p.cmd.Wait()
	if found, ok, err := w.Check(); ok || err != nil {
		t.Fatalf("Check of an exited process = %v, %v, %v", found, ok, err)
	}
	if w.Held() != 0 {
		t.Fatalf("Watcher holds %d files of an exited process", w.Held())
	}
	w.Close()
	if after := openProcFiles(t); after != before {
		t.Fatalf("%d /proc files open before the Watcher, %d after its Close", before, after)
	}
	if _, _, err := w.Check(); err == nil {
		t.Fatal("Check of a closed Watcher succeeded")
	}
}

// openProcFiles counts the test's open fds of files in /proc, other than the
// directory listing them.
func openProcFiles(t *testing.T) int {
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range d {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(target, "/proc/") {
			n++
		}
	}
	return n - 1
}

// A Watcher's Checks cost the same whatever the number of threads: after
// its first, each reads a bounded number of /proc files, about as many for
// a server with 1,000 idle threads as for one with 20; and the server is
// still seen once it serves.
func TestWatcherCostIndependentOfThreads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process of 1,000 threads")
	}
	perCheck := map[int]float64{}
	for _, idle := range []int{20, 1000} {
		l, sock := listen(t)
		socks := sockets(t, l)
		p := start(t, sock, []string{helperVar + "=goserver", fmt.Sprintf("%s=%d", idleVar, idle)}, os.Args[0])
		p.expect("holding", 1)
		wt := NewWatcher(p.pid(), socks)
		defer wt.Close()
		// The first Check looks at every thread; then the threads that
		// had just started cool down.
		for range HotFor + 2*SweepEvery {
			if w, found, err := wt.Check(); found || err != nil {
				t.Fatalf("Check of a holder = %v, %v, %v", w, found, err)
			}
		}
		const checks = 2 * SweepEvery
		before := wt.calls
		for range checks {
			wt.Check()
		}
		perCheck[idle] = float64(wt.calls-before) / checks
		t.Logf("%d idle threads (%d in all): %.1f /proc reads a Check, %d files held", idle, threads(p.pid()), perCheck[idle], wt.Held())

		p.release()
		p.expect("listening", 1)
		w := watchFound(t, p, wt)
		if w.Via != Epoll || w.PID != p.pid() {
			t.Fatalf("found %v, want pid %d in epoll_wait", w, p.pid())
		}
	}
	if perCheck[1000] > 2*perCheck[20]+4 || perCheck[1000] > HotPerCheck {
		t.Fatalf("/proc reads a Check: %.1f with 1,000 idle threads, %.1f with 20; want about as many", perCheck[1000], perCheck[20])
	}
}

// A thread that starts to wait after it has long been blocked elsewhere
// (a pool's acceptor, released by a lock) is looked at in turn, and found
// within ⌈threads/ColdPerCheck⌉ Checks of a Watcher: here the acceptor
// comes last in the turns when it starts to wait, and nothing else it
// could be seen by runs meanwhile.
func TestWatcherFindsALongIdleThread(t *testing.T) {
	py := python(t, "", "")
	l, sock := listen(t)
	socks := sockets(t, l)
	const pool = 200
	p := start(t, sock, nil, py, testdata("idle_pool.py"), strconv.Itoa(pool))
	acceptor, _ := strconv.Atoi(strings.TrimPrefix(p.expectLine("acceptor "), "acceptor "))
	p.expect("holding", 1)
	wt := NewWatcher(p.pid(), socks)
	defer wt.Close()
	for range HotFor + 2 {
		if w, found, err := wt.Check(); found || err != nil {
			t.Fatalf("Check of a holder = %v, %v, %v", w, found, err)
		}
	}
	if hot := wt.hot.len(); hot != 0 {
		t.Fatalf("%d threads hot in a process where none has run for %d Checks", hot, HotFor)
	}
	// Take turns until the acceptor has just had its.
	for i := 0; !slices.ContainsFunc(wt.picks, func(th *threadState) bool { return th.tid == acceptor }); i++ {
		if i > pool+2 {
			t.Fatalf("the acceptor (thread %d) never took its turn", acceptor)
		}
		wt.Check()
	}

	p.release()
	p.expect("listening", 1)
	waitFound(t, p, socks) // the acceptor now waits in accept
	n := threads(p.pid())
	bound := (n+ColdPerCheck-1)/ColdPerCheck + 1
	for i := 1; ; i++ {
		w, found, err := wt.Check()
		if err != nil {
			t.Fatal(err)
		}
		if found {
			if w.Via != Accept || w.TID != acceptor {
				t.Fatalf("found %v, want the acceptor thread %d in accept", w, acceptor)
			}
			t.Logf("the acceptor, among %d threads, found at Check %d (at most %d)", n, i, bound)
			break
		}
		if i == bound {
			t.Fatalf("the acceptor, among %d threads, not found in %d Checks", n, bound)
		}
	}
	get(t, l, "\n")
}

// A process that leaves the generation (re-parented to init when its
// parent exits) leaves the Watcher's view with it, even once it serves.
func TestWatcherLetsAnOrphanGo(t *testing.T) {
	py := python(t, "", "")
	l, sock := listen(t)
	socks := sockets(t, l)
	p := start(t, sock, nil, py, testdata("orphan.py"))
	line := p.expectLine("server ")
	server, _ := strconv.Atoi(strings.TrimPrefix(line, "server "))
	t.Cleanup(func() { syscall.Kill(server, syscall.SIGKILL) })
	p.expect("holding", 1)
	wt := NewWatcher(p.pid(), socks)
	defer wt.Close()
	deadline := time.Now().Add(30 * time.Second)
	for wt.byPID[server] == nil {
		if w, found, err := wt.Check(); found || err != nil {
			t.Fatalf("Check before the server serves = %v, %v, %v", w, found, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server (pid %d) never joined the generation of pid %d", server, p.pid())
		}
		time.Sleep(DefaultInterval)
	}

	io.WriteString(p.stdin, "go\n") // its parent exits; it serves
	if w := waitFoundPID(t, server, socks); w.PID != server {
		t.Fatalf("the server itself: found %v", w)
	}
	for range 3 {
		if w, found, err := wt.Check(); found || err != nil {
			t.Fatalf("Check of a generation its server left = %v, %v, %v", w, found, err)
		}
	}
	if wt.byPID[server] != nil {
		t.Fatalf("the server (pid %d), re-parented to pid %d, is still in the generation", server, parentOf(t, server))
	}
}
