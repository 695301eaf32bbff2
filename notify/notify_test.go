package notify_test

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/notify"
)

// senderEnv makes the test binary send one notify message to the socket
// it names and exit, instead of running tests.
const senderEnv = "BATON_NOTIFY_TEST_SEND"

func TestMain(m *testing.M) {
	if path := os.Getenv(senderEnv); path != "" {
		if err := notify.SendTo(path, fmt.Sprintf("READY=1\nMAINPID=%d", os.Getpid())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// newChild is a copy of this test binary that sends to path.
func newChild(self, path string) *exec.Cmd {
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), senderEnv+"="+path,
		// Spare a race-enabled child the race runtime's 1s pause at exit.
		strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = os.Stderr
	return cmd
}

var parseTests = []struct {
	name string
	in   string
	want notify.Message
	bad  []string // quoted lines the error must name; none: no error
}{
	{"empty", "", notify.Message{}, nil},
	{"ready", "READY=1", notify.Message{"READY": "1"}, nil},
	{"trailing newline", "READY=1\n", notify.Message{"READY": "1"}, nil},
	{"several", "READY=1\nSTATUS=serving\nMAINPID=42", notify.Message{"READY": "1", "STATUS": "serving", "MAINPID": "42"}, nil},
	{"empty lines skipped", "\n\nREADY=1\n\n\nSTOPPING=1\n", notify.Message{"READY": "1", "STOPPING": "1"}, nil},
	{"'=' in value", "STATUS=a=b==c", notify.Message{"STATUS": "a=b==c"}, nil},
	{"empty value", "STATUS=", notify.Message{"STATUS": ""}, nil},
	{"spaces in value kept", "STATUS= 3 workers, 1 draining ", notify.Message{"STATUS": " 3 workers, 1 draining "}, nil},
	{"later assignment wins", "STATUS=one\nSTATUS=two", notify.Message{"STATUS": "two"}, nil},
	{"digits and underscore", "X_1=a\n_=b\n9=c", notify.Message{"X_1": "a", "_": "b", "9": "c"}, nil},
	{"carriage return belongs to the value", "READY=1\r\n", notify.Message{"READY": "1\r"}, nil},
	{"non-ASCII value", "STATUS=h\u00e9llo \u2713", notify.Message{"STATUS": "h\u00e9llo \u2713"}, nil},

	// Bad lines are reported; good ones are still parsed.
	{"no '='", "READY=1\nbogus\nSTATUS=ok", notify.Message{"READY": "1", "STATUS": "ok"}, []string{`"bogus"`}},
	{"lower-case key", "ready=1\nSTATUS=ok", notify.Message{"STATUS": "ok"}, []string{`"ready=1"`}},
	{"mixed-case key", "Ready=1", notify.Message{}, []string{`"Ready=1"`}},
	{"empty key", "=1\nREADY=1", notify.Message{"READY": "1"}, []string{`"=1"`}},
	{"space in key", "READY =1\n READY=1", notify.Message{}, []string{`"READY =1"`, `" READY=1"`}},
	{"dash in key", "MY-KEY=1", notify.Message{}, []string{`"MY-KEY=1"`}},
	{"only a carriage return", "\r\nREADY=1", notify.Message{"READY": "1"}, []string{`"\r"`}},
	{"all bad, in order", "a\nb\nc", notify.Message{}, []string{`"a", "b", "c"`}},
	{"long bad line cut to 40 characters", strings.Repeat("x", 100) + "\nREADY=1", notify.Message{"READY": "1"}, []string{`"` + strings.Repeat("x", 40) + `"`}},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := notify.Parse([]byte(tt.in))
			if !maps.Equal(got, tt.want) || got == nil {
				t.Errorf("Parse(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if tt.bad == nil {
				if err != nil {
					t.Errorf("Parse(%q) error: %v", tt.in, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q): no error, want one naming %s", tt.in, tt.bad)
			}
			if !strings.HasPrefix(err.Error(), "malformed notify line(s): ") {
				t.Errorf("Parse(%q) error %q", tt.in, err)
			}
			for _, b := range tt.bad {
				if !strings.Contains(err.Error(), b) {
					t.Errorf("Parse(%q) error %q does not name %s", tt.in, err, b)
				}
			}
		})
	}
}

// TestParseLongLineCut checks that a bad line is quoted only in part, so
// a hostile worker cannot flood the master's log through its errors.
func TestParseLongLineCut(t *testing.T) {
	_, err := notify.Parse([]byte(strings.Repeat("y", notify.MaxDatagram)))
	if err == nil {
		t.Fatal("no error")
	}
	if len(err.Error()) > 100 {
		t.Errorf("error for one long bad line is %d bytes long", len(err.Error()))
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte("READY=1\nFDSTORE=1\nFDNAME=x:y\nWATCHDOG=1\n"))
	f.Add([]byte("\xff\xfe=1\nA=\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := notify.Parse(in)
		if m == nil {
			t.Fatalf("Parse(%q) returned a nil Message", in)
		}
		// Work out the expected result line by line.
		want := notify.Message{}
		bad := 0
		for _, line := range strings.Split(string(in), "\n") {
			if line == "" {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok || k == "" || strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
				bad++
				continue
			}
			want[k] = v
		}
		if !maps.Equal(m, want) {
			t.Fatalf("Parse(%q) = %q, want %q", in, m, want)
		}
		if (err != nil) != (bad > 0) {
			t.Fatalf("Parse(%q) error %v with %d bad lines", in, err, bad)
		}
		// What parsed is sent the same way again.
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, m[k])
		}
		again, err := notify.Parse([]byte(b.String()))
		if err != nil || !maps.Equal(again, m) {
			t.Fatalf("Parse(%q) = %q, which reads back as %q, %v", in, m, again, err)
		}
	})
}

// receive runs s.Receive with a time limit.
func receive(t *testing.T, s *notify.Socket) notify.Datagram {
	t.Helper()
	type result struct {
		d   notify.Datagram
		err error
	}
	ch := make(chan result, 1)
	go func() {
		d, err := s.Receive()
		ch <- result{d, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Receive: %v", r.err)
		}
		return r.d
	case <-time.After(5 * time.Second):
		t.Fatal("Receive: nothing within 5s")
	}
	panic("unreachable")
}

func TestSendReceive(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	tests := []struct {
		send    string
		want    notify.Message
		wantErr bool
	}{
		{"READY=1\nSTATUS=hi", notify.Message{"READY": "1", "STATUS": "hi"}, false},
		{"STOPPING=1", notify.Message{"STOPPING": "1"}, false},
		{"STATUS=x=y\nnonsense\n", notify.Message{"STATUS": "x=y"}, true},
		{strings.Repeat("A", notify.MaxDatagram-2) + "=1", notify.Message{strings.Repeat("A", notify.MaxDatagram-2): "1"}, false},
		{"STATUS=" + strings.Repeat("z", notify.MaxDatagram), notify.Message{}, true}, // one byte too long
	}
	for _, tt := range tests {
		if err := notify.SendTo(s.Path(), tt.send); err != nil {
			t.Fatalf("SendTo: %v", err)
		}
		d := receive(t, s)
		if d.PID != os.Getpid() {
			t.Errorf("Datagram.PID = %d, want this process, %d", d.PID, os.Getpid())
		}
		if !maps.Equal(d.Message, tt.want) || d.Message == nil {
			t.Errorf("sent %.60q, received %.60q", tt.send, d.Message)
		}
		if (d.Err != nil) != tt.wantErr {
			t.Errorf("sent %.60q: Datagram.Err = %v, want an error: %v", tt.send, d.Err, tt.wantErr)
		}
	}
}

// TestReceiveSender checks that the PID is the kernel's word, whoever
// sends: here a child process.
func TestReceiveSender(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := newChild(self, s.Path())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := receive(t, s)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if d.PID != cmd.Process.Pid || d.PID == os.Getpid() {
		t.Errorf("Datagram.PID = %d, want the child's %d", d.PID, cmd.Process.Pid)
	}
	if want := (notify.Message{"READY": "1", "MAINPID": fmt.Sprint(cmd.Process.Pid)}); !maps.Equal(d.Message, want) {
		t.Errorf("Message = %q, want %q", d.Message, want)
	}
}

func TestSendViaEnvironment(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := notify.Send("READY=1"); err != nil {
		t.Errorf("Send without NOTIFY_SOCKET: %v, want nil", err)
	}

	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Setenv("NOTIFY_SOCKET", s.Path())
	if err := notify.Send("STATUS=via env"); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, s); d.Message["STATUS"] != "via env" {
		t.Errorf("received %q", d.Message)
	}

	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody.sock"))
	if err := notify.Send("READY=1"); err == nil || !strings.Contains(err.Error(), "nobody.sock") {
		t.Errorf("Send to a missing socket: %v, want an error naming it", err)
	}
}

func TestSendToAbstract(t *testing.T) {
	name := fmt.Sprintf("@baton-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Skipf("abstract unix sockets: %v", err)
	}
	defer c.Close()
	if err := notify.SendTo(name, "READY=1"); err != nil {
		t.Fatalf("SendTo(%s): %v", name, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("abstract socket received %q, %v", buf[:n], err)
	}
	// No file of that name appears in the working directory.
	if _, err := os.Lstat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat(%q) = %v: SendTo to an abstract name touched the filesystem", name, err)
	}
}

// TestReceiveClosesPassedFDs checks that descriptors a sender attaches
// (FDSTORE=1) do not pile up in the receiver.
func TestReceiveClosesPassedFDs(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendmsg(fd, []byte("FDSTORE=1"), syscall.UnixRights(int(r.Fd())), &syscall.SockaddrUnix{Name: s.Path()}, 0); err != nil {
		t.Fatal(err)
	}
	r.Close() // the only read end left is the one in flight

	d := receive(t, s)
	if d.Message["FDSTORE"] != "1" || d.Err != nil {
		t.Errorf("received %q, %v", d.Message, d.Err)
	}
	// Receive closed the copy it got: no read end is left, so writing
	// fails with EPIPE.
	if _, err := w.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write to the pipe after Receive: %v, want EPIPE (the passed read end is still open)", err)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "n.sock")
	// A leftover file is replaced.
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := notify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("notify socket file is %v, want a socket with mode 0666", fi.Mode())
	}
	if err := notify.SendTo(path, "READY=1"); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, s); d.Message["READY"] != "1" {
		t.Errorf("received %q", d.Message)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close, the socket file: %v, want it removed", err)
	}
	// Close leaves a directory it did not make.
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("Close removed the directory it was given: %v", err)
	}

	if _, err := notify.Listen(filepath.Join(dir, "missing", "n.sock")); err == nil {
		t.Error("Listen in a missing directory succeeded")
	}
}

// TestListenPrivate checks the master's socket: a file in a fresh private
// directory under the runtime directory, abstract only where no path fits,
// unique, a plain sd_notify socket to a sender, and gone after Close.
func TestListenPrivate(t *testing.T) {
	tmp, runtime := t.TempDir(), t.TempDir()
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	for _, tc := range []struct {
		name, tmpdir, runtime string
		under                 string // "" for abstract
	}{
		{"temp dir", tmp, "", tmp},
		{"runtime dir first", tmp, runtime, runtime},
		{"no path fits", long, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TMPDIR", tc.tmpdir)
			t.Setenv("XDG_RUNTIME_DIR", tc.runtime)
			t.Setenv("RUNTIME_DIRECTORY", "")
			s, err := notify.ListenPrivate()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.under == "" && !strings.HasPrefix(s.Path(), fmt.Sprintf("@baton-notify-%d-", os.Getpid())):
				t.Fatalf("Path() = %q, want an abstract name @baton-notify-PID-…", s.Path())
			case tc.under != "" && (filepath.Dir(filepath.Dir(s.Path())) != tc.under || filepath.Base(s.Path()) != "notify.sock"):
				t.Fatalf("Path() = %q, want %s/baton-…/notify.sock", s.Path(), tc.under)
			case tc.under != "":
				if fi, err := os.Stat(filepath.Dir(s.Path())); err != nil || fi.Mode().Perm() != 0o700 {
					t.Fatalf("private directory: %v %v, want mode 0700", fi.Mode(), err)
				}
			}
			s2, err := notify.ListenPrivate()
			if err != nil {
				t.Fatal(err)
			}
			if s2.Path() == s.Path() {
				t.Errorf("two sockets share the name %s", s.Path())
			}
			s2.Close()
			if err := notify.SendTo(s.Path(), "READY=1"); err != nil {
				t.Fatal(err)
			}
			if d := receive(t, s); d.Message["READY"] != "1" || d.PID != os.Getpid() {
				t.Errorf("received %q from pid %d", d.Message, d.PID)
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if tc.under != "" {
				if entries, _ := os.ReadDir(tc.under); len(entries) != 0 {
					t.Errorf("left behind in %s: %v", tc.under, entries)
				}
			}
			if err := notify.SendTo(s.Path(), "READY=1"); err == nil {
				t.Errorf("SendTo a closed socket succeeded")
			}
		})
	}
}

// sendAs sends state to path from a thread of this process that runs as
// uid and gid, without supplementary groups: a worker of another user.
// The thread's credentials are changed for it alone (raw system calls,
// which Go and the C library do not spread to the other threads), and it
// is never unlocked, so it ends with its goroutine.
func sendAs(uid, gid int, path, state string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		for _, call := range [][4]uintptr{
			{syscall.SYS_SETGROUPS, 0, 0, 0},
			{syscall.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)},
			{syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)},
		} {
			if _, _, e := syscall.RawSyscall(call[0], call[1], call[2], call[3]); e != 0 {
				errc <- fmt.Errorf("system call %d: %w", call[0], e)
				return
			}
		}
		errc <- notify.SendTo(path, state)
	}()
	return <-errc
}

// TestListenPrivateReachableBy: a master (root) whose workers run as
// another user makes its private socket reachable by that user and
// nobody else, and a repaired socket is made the same way.
func TestListenPrivateReachableBy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to send as other users")
	}
	// A runtime directory anyone may pass, as /run and /tmp are (a test's
	// TempDir is not).
	runtimeDir, err := os.MkdirTemp("", "notify-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runtimeDir)
	if err := os.Chmod(runtimeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", runtimeDir)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	const uid, gid = 64101, 64102 // no names needed
	s, err := notify.ListenPrivate(notify.ReachableBy(uid, gid))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	for round := range 2 {
		dir := filepath.Dir(s.Path())
		for _, f := range []struct {
			path     string
			uid, gid int
			mode     os.FileMode
		}{{dir, 0, gid, os.ModeDir | 0o710}, {s.Path(), uid, gid, os.ModeSocket | 0o600}} {
			fi, err := os.Lstat(f.path)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != f.uid || int(st.Gid) != f.gid || fi.Mode() != f.mode {
				t.Errorf("%s: owner %d:%d, mode %v; want %d:%d, %v", f.path, st.Uid, st.Gid, fi.Mode(), f.uid, f.gid, f.mode)
			}
		}
		for _, c := range []struct {
			uid, gid int
			ok       bool
		}{
			{uid, gid, true},
			{uid, 64103, false},   // the user, with another group: cannot pass the directory
			{64104, gid, false},   // another user of the group: passes the directory, not the socket
			{64104, 64104, false}, // a stranger
			{0, 0, true},          // root
		} {
			err := sendAs(c.uid, c.gid, s.Path(), fmt.Sprintf("STATUS=%d:%d", c.uid, c.gid))
			switch {
			case c.ok && err != nil:
				t.Errorf("round %d: %d:%d cannot send: %v", round, c.uid, c.gid, err)
			case c.ok:
				if d := receive(t, s); d.Message["STATUS"] != fmt.Sprintf("%d:%d", c.uid, c.gid) || d.PID != os.Getpid() {
					t.Errorf("round %d: received %q from pid %d", round, d.Message, d.PID)
				}
			case !errors.Is(err, syscall.EACCES):
				t.Errorf("round %d: %d:%d sending: %v, want permission denied", round, c.uid, c.gid, err)
			}
		}
		// A cleaner deletes the directory: the new socket is reachable
		// as the old one was.
		os.RemoveAll(dir)
		r, err := s.Repair()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = r
	}
}

// TestDirReachableBy: the master's directory of worker sockets, when its
// workers run as another user, lets that user send to each socket and
// nobody else; a directory made anew after a cleaner deleted it is made
// the same way; and a runtime directory the user cannot pass through (a
// root login's /run/user/0) is passed over for the temp dir.
func TestDirReachableBy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to send as other users")
	}
	open, err := os.MkdirTemp("", "notify-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(open)
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(open, "user-0")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", open)
	t.Setenv("XDG_RUNTIME_DIR", closed)
	t.Setenv("RUNTIME_DIRECTORY", "")
	const uid, gid = 64101, 64102 // no names needed
	d, err := notify.NewDir(notify.ReachableBy(uid, gid))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if filepath.Dir(d.Path()) != open {
		t.Fatalf("Path() = %q, want a directory in %s: the user cannot pass through %s", d.Path(), open, closed)
	}
	for round := range 2 {
		var socks []*notify.Socket
		for range 2 {
			s, err := d.Listen()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			socks = append(socks, s)
		}
		if round == 1 && !d.Moved() {
			t.Error("Moved() is false after the directory was made anew")
		}
		type file struct {
			path     string
			uid, gid int
			mode     os.FileMode
		}
		files := []file{{d.Path(), 0, gid, os.ModeDir | 0o710}}
		for _, s := range socks {
			files = append(files, file{s.Path(), uid, gid, os.ModeSocket | 0o600})
		}
		for _, f := range files {
			fi, err := os.Lstat(f.path)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != f.uid || int(st.Gid) != f.gid || fi.Mode() != f.mode {
				t.Errorf("round %d: %s: owner %d:%d, mode %v; want %d:%d, %v", round, f.path, st.Uid, st.Gid, fi.Mode(), f.uid, f.gid, f.mode)
			}
		}
		for _, s := range socks {
			for _, c := range []struct {
				uid, gid int
				ok       bool
			}{
				{uid, gid, true},
				{uid, 64103, false},   // the user, with another group: cannot pass the directory
				{64104, gid, false},   // another user of the group: passes the directory, not the socket
				{64104, 64104, false}, // a stranger
				{0, 0, true},          // root
			} {
				err := sendAs(c.uid, c.gid, s.Path(), fmt.Sprintf("STATUS=%d:%d", c.uid, c.gid))
				switch {
				case c.ok && err != nil:
					t.Errorf("round %d: %d:%d cannot send to %s: %v", round, c.uid, c.gid, s.Path(), err)
				case c.ok:
					if m := receive(t, s); m.Message["STATUS"] != fmt.Sprintf("%d:%d", c.uid, c.gid) {
						t.Errorf("round %d: received %q", round, m.Message)
					}
				case !errors.Is(err, syscall.EACCES):
					t.Errorf("round %d: %d:%d sending to %s: %v, want permission denied", round, c.uid, c.gid, s.Path(), err)
				}
			}
		}
		os.RemoveAll(d.Path())
	}
}

// TestRepair: a /tmp cleaner deletes the socket's directory. The socket is
// no longer intact, and Repair gives a new one that works.
func TestRepair(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("RUNTIME_DIRECTORY", "")
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, err := s.Repair(); err != nil || r != s || !s.Intact() {
		t.Fatalf("Repair of an intact socket: %v %v", r, err)
	}
	os.RemoveAll(filepath.Dir(s.Path()))
	if s.Intact() {
		t.Fatal("Intact after its file was deleted")
	}
	r, err := s.Repair()
	if err != nil || r == s || r.Path() == s.Path() {
		t.Fatalf("Repair: %v, %v", r, err)
	}
	defer r.Close()
	if err := notify.SendTo(r.Path(), "STATUS=back"); err != nil {
		t.Fatal(err)
	}
	if d := receive(t, r); d.Message["STATUS"] != "back" {
		t.Errorf("repaired socket received %q", d.Message)
	}
}

// TestCloseRemovesOnlyItsOwnFile checks that Close removes the socket
// file Listen made and nothing else: not its directory, whatever its name,
// nor a file that has replaced the socket since.
func TestCloseRemovesOnlyItsOwnFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "baton-keep")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "n.sock")
	s, err := notify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("Close removed the directory %s: %v", dir, err)
	}

	s, err = notify.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("Close removed or changed a file that replaced its socket: %q, %v", b, err)
	}
}

// TestSendToNeverBlocks fills a receiver that does not read: SendTo must
// return at once with ErrQueueFull instead of waiting for room.
func TestSendToNeverBlocks(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		// The receive queue holds net.unix.max_dgram_qlen datagrams (10 by
		// default); 10 000 sends overflow it whatever the setting.
		for i := 0; i < 10000; i++ {
			if err := notify.SendTo(s.Path(), "STATUS=filling"); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if !errors.Is(err, notify.ErrQueueFull) {
			t.Fatalf("SendTo to a full queue: %v, want ErrQueueFull", err)
		}
		if !strings.Contains(err.Error(), s.Path()) || !strings.Contains(err.Error(), "dropped") {
			t.Errorf("error %q does not name the socket and say the message was dropped", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SendTo blocked on a receiver that does not read")
	}
	// What was queued is still delivered, in order.
	if d := receive(t, s); d.Message["STATUS"] != "filling" {
		t.Errorf("first queued message: %q", d.Message)
	}
}

func TestReceiveAfterClose(t *testing.T) {
	s, err := notify.ListenPrivate()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Receive(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Receive after Close: %v, want %v", err, net.ErrClosed)
	}
}

func TestWatchdog(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		{"", "", 0, false},
		{"2000000", "", 2 * time.Second, true},
		{"2000000", self, 2 * time.Second, true},
		{"2000000", "1", 0, false}, // inherited from the process watched
		{"0", "", 0, false},
		{"-5", "", 0, false},
		{"2s", "", 0, false},
		{"99999999999999999999", "", 0, false},
		{"9223372036854775807", "", 0, false}, // overflows a Duration
	}
	for _, tt := range tests {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		if got, ok := notify.Watchdog(); got != tt.want || ok != tt.ok {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: Watchdog() = %v, %v; want %v, %v", tt.usec, tt.pid, got, ok, tt.want, tt.ok)
		}
	}
}
