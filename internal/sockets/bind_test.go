package sockets_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-sh/baton/internal/sockets"
)

// shortDir is a fresh directory with a path short enough for unix socket
// names (108 bytes), which t.TempDir's long names may not be.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func mustSpec(t *testing.T, s string) sockets.Spec {
	t.Helper()
	spec, err := sockets.ParseSpec(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func mustBind(t *testing.T, s string) *sockets.Socket {
	t.Helper()
	sock, err := sockets.Bind(mustSpec(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return sock
}

// nonblocking reports the O_NONBLOCK flag of f's open file description,
// without going through f.Fd (which would clear it).
func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		flags, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	}); err != nil {
		t.Fatal(err)
	}
	if errno != 0 {
		t.Fatal(errno)
	}
	return flags&syscall.O_NONBLOCK != 0
}

// TestBindStream binds stream sockets and checks that the descriptor is a
// blocking listening socket that a worker can accept on.
func TestBindStream(t *testing.T) {
	dir := shortDir(t)
	tests := []struct {
		spec string
		want func(net.Addr) bool
	}{
		{"tcp://127.0.0.1:0", func(a net.Addr) bool {
			ta, ok := a.(*net.TCPAddr)
			return ok && ta.IP.Equal(net.IPv4(127, 0, 0, 1)) && ta.Port != 0
		}},
		{"tcp4://localhost:0", func(a net.Addr) bool {
			ta, ok := a.(*net.TCPAddr)
			return ok && ta.IP.IsLoopback() && ta.Port != 0
		}},
		{"unix://" + filepath.Join(dir, "s.sock"), func(a net.Addr) bool {
			ua, ok := a.(*net.UnixAddr)
			return ok && ua.Name == filepath.Join(dir, "s.sock")
		}},
	}
	for _, tt := range tests {
		sock := mustBind(t, tt.spec)
		if !tt.want(sock.Addr) {
			t.Errorf("Bind(%s).Addr = %#v", tt.spec, sock.Addr)
		}
		if sock.Spec != mustSpec(t, tt.spec) {
			t.Errorf("Bind(%s).Spec = %#v", tt.spec, sock.Spec)
		}
		if nonblocking(t, sock.File) {
			t.Errorf("Bind(%s): descriptor is non-blocking; socket activation passes blocking ones", tt.spec)
		}

		// The kernel queues a connection on the bound socket before anyone
		// accepts, and a worker's listener made from the file accepts it.
		c, err := net.DialTimeout(sock.Addr.Network(), sock.Addr.String(), 5*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", sock.Addr, err)
		}
		l, err := net.FileListener(sock.File)
		if err != nil {
			t.Fatalf("FileListener(%s): %v", tt.spec, err)
		}
		// The worker's listener made the shared socket non-blocking; the
		// master passing the file to the next worker must not undo that.
		sock.File.Fd()
		if !nonblocking(t, sock.File) {
			t.Errorf("Bind(%s): File.Fd cleared the O_NONBLOCK a worker set", tt.spec)
		}
		if ul, ok := l.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatalf("accept on %s: %v", tt.spec, err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(buf); err != nil || buf[0] != 'x' {
			t.Errorf("read on accepted conn: %q, %v", buf, err)
		}
		s.Close()
		c.Close()
		l.Close()
		if err := sock.Close(); err != nil {
			t.Errorf("Close(%s): %v", tt.spec, err)
		}
	}
}

func TestBindPacket(t *testing.T) {
	sock := mustBind(t, "udp://127.0.0.1:0")
	defer sock.Close()
	ua, ok := sock.Addr.(*net.UDPAddr)
	if !ok || !ua.IP.Equal(net.IPv4(127, 0, 0, 1)) || ua.Port == 0 {
		t.Fatalf("Bind(udp).Addr = %#v", sock.Addr)
	}
	if nonblocking(t, sock.File) {
		t.Errorf("Bind(udp): descriptor is non-blocking")
	}
	pc, err := net.FilePacketConn(sock.File)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sock.File.Fd()
	if !nonblocking(t, sock.File) {
		t.Errorf("Bind(udp): File.Fd cleared the O_NONBLOCK a worker set")
	}
	c, err := net.Dial("udp", sock.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Errorf("ReadFrom on the bound udp socket: %q, %v", buf[:n], err)
	}
}

func TestBindUnixMode(t *testing.T) {
	dir := shortDir(t)
	for _, mode := range []os.FileMode{0o600, 0o660, 0o666, 0o777, 0o640} {
		path := filepath.Join(dir, "m.sock")
		sock, err := sockets.Bind(mustSpec(t, fmt.Sprintf("unix://%s?mode=%o", path, mode)))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSocket == 0 {
			t.Errorf("%s is %v, want a socket", path, fi.Mode())
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("Bind with mode %04o: socket file has mode %04o", mode, got)
		}
		if err := sock.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Close, %s: %v, want it removed", path, err)
		}
	}
}

// staleSocket leaves a unix socket file at path that nobody listens on, as
// a killed process would.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("the stale socket still accepts")
	}
}

func TestBindUnixStale(t *testing.T) {
	path := filepath.Join(shortDir(t), "stale.sock")
	staleSocket(t, path)
	sock, err := sockets.Bind(mustSpec(t, "unix://"+path))
	if err != nil {
		t.Fatalf("Bind over a stale socket: %v", err)
	}
	defer sock.Close()
	// The stale file refused connections (see staleSocket); the file at
	// the path now is the new, bound socket.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the new socket: %v", err)
	}
	c.Close()
}

func TestBindUnixRefused(t *testing.T) {
	dir := shortDir(t)

	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Answer the liveness probe the way a running server would.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	liveInfo, _ := os.Lstat(live)

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path string
		want string
	}{
		{live, live + " is in use by a running server: stop it or choose another path"},
		{regular, regular + " exists and is not a socket"},
		{filepath.Join(dir, "no-such-dir", "s.sock"), "no such file or directory"},
	}
	for _, tt := range tests {
		sock, err := sockets.Bind(mustSpec(t, "unix://"+tt.path))
		if err == nil {
			sock.Close()
			t.Errorf("Bind(%s) succeeded, want an error", tt.path)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Bind(%s) error %q does not contain %q", tt.path, err, tt.want)
		}
	}

	// Neither file was touched.
	if fi, err := os.Lstat(live); err != nil || !os.SameFile(fi, liveInfo) {
		t.Errorf("the live socket file was replaced or removed: %v", err)
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file was changed: %q, %v", b, err)
	}
	c, err := net.Dial("unix", live)
	if err != nil {
		t.Errorf("the live server no longer accepts: %v", err)
	} else {
		c.Close()
	}
}

// TestCloseLeavesReplacedFile checks that Close removes the unix socket
// file only while it is the one Bind created.
func TestCloseLeavesReplacedFile(t *testing.T) {
	dir := shortDir(t)
	tests := []struct {
		name    string
		replace func(t *testing.T, path string)
	}{
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"another socket", func(t *testing.T, path string) {
			staleSocket(t, path)
		}},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, "r.sock")
		sock := mustBind(t, "unix://"+path)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		tt.replace(t, path)
		before, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := sock.Close(); err != nil {
			t.Errorf("%s: Close: %v", tt.name, err)
		}
		after, err := os.Lstat(path)
		if err != nil {
			t.Errorf("%s: Close removed a file it did not create: %v", tt.name, err)
			continue
		}
		if !os.SameFile(before, after) {
			t.Errorf("%s: the file at %s changed during Close", tt.name, path)
		}
		os.Remove(path)
	}

	// Already gone: Close still closes and does not fail.
	path := filepath.Join(dir, "gone.sock")
	sock := mustBind(t, "unix://"+path)
	os.Remove(path)
	if err := sock.Close(); err != nil {
		t.Errorf("Close after the file was removed: %v", err)
	}
}

func TestBindAddressInUse(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	// A socket baton itself bound holds its address too.
	held := mustBind(t, "tcp://127.0.0.1:0")
	defer held.Close()

	for _, spec := range []string{
		"tcp://" + tl.Addr().String(),
		"tcp4://" + tl.Addr().String(),
		"udp://" + uc.LocalAddr().String(),
		"tcp://" + held.Addr.String(),
	} {
		sock, err := sockets.Bind(mustSpec(t, spec))
		if err == nil {
			sock.Close()
			t.Errorf("Bind(%s) succeeded on an address in use", spec)
			continue
		}
		want := "bind " + mustSpec(t, spec).String() + ": address already in use: stop the process that holds it or choose another address"
		if err.Error() != want {
			t.Errorf("Bind(%s) error %q, want %q", spec, err, want)
		}
	}
}

func TestBindAddressNotAvailable(t *testing.T) {
	// 192.0.2.0/24 is reserved for documentation: no machine has it.
	sock, err := sockets.Bind(mustSpec(t, "tcp://192.0.2.1:0"))
	if err == nil {
		sock.Close()
		t.Skip("this machine has 192.0.2.1")
	}
	if !strings.Contains(err.Error(), "address not available on this machine") {
		t.Errorf("Bind(192.0.2.1) error %q", err)
	}
}

// rawUnixListen binds a unix socket of the given type at path with a
// listen backlog of 0 (for stream sockets): one pending connection fills it.
func rawUnixListen(t *testing.T, path string, typ int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if typ == syscall.SOCK_STREAM {
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBindUnixLiveNotAccepting checks sockets that are live although a
// connection attempt fails: they must not be taken for stale ones.
func TestBindUnixLiveNotAccepting(t *testing.T) {
	dir := shortDir(t)

	// A server whose accept queue is full: connecting gives EAGAIN.
	busy := filepath.Join(dir, "busy.sock")
	rawUnixListen(t, busy, syscall.SOCK_STREAM)
	for i := 0; ; i++ {
		c, err := net.Dial("unix", busy)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("filling the queue: %v", err)
			}
			break
		}
		defer c.Close()
		if i == 10 {
			t.Fatal("the queue of a backlog-0 socket does not fill up")
		}
	}

	// A live datagram socket: a stream connect gives EPROTOTYPE.
	dgram := filepath.Join(dir, "dgram.sock")
	rawUnixListen(t, dgram, syscall.SOCK_DGRAM)

	tests := []struct {
		path string
		want string
	}{
		{busy, busy + " is in use by a running server"},
		{dgram, dgram + " exists and cannot be checked for a running server"},
	}
	for _, tt := range tests {
		before, err := os.Lstat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		sock, err := sockets.Bind(mustSpec(t, "unix://"+tt.path))
		if err == nil {
			sock.Close()
			t.Errorf("Bind(%s) took over a live socket", tt.path)
		} else if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Bind(%s) error %q does not contain %q", tt.path, err, tt.want)
		}
		if after, err := os.Lstat(tt.path); err != nil || !os.SameFile(before, after) {
			t.Errorf("Bind(%s) removed or replaced the live socket file (%v)", tt.path, err)
		}
	}
}

// TestBindWildcardFamilies binds the wildcard addresses as systemd's
// ListenStream= and ListenDatagram= do: 0.0.0.0 takes IPv4 only, [::] and
// an empty host take IPv4 and IPv6 (net.ipv6.bindv6only is 0 here, as on
// every usual Linux). Only loopback is dialled.
func TestBindWildcardFamilies(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only"); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Skip("net.ipv6.bindv6only is set: [::] is IPv6 only on this machine")
	}
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	tests := []struct {
		spec       string
		addr       string // the bound address, without its port
		ipv4, ipv6 bool   // whether 127.0.0.1 and ::1 reach it
	}{
		{"tcp://0.0.0.0:0", "0.0.0.0", true, false},
		{"tcp://[::]:0", "::", true, true},
		{"tcp://:0", "::", true, true},
		{"tcp4://0.0.0.0:0", "0.0.0.0", true, false},
		{"tcp6://[::]:0", "::", false, true},
		{"udp://0.0.0.0:0", "0.0.0.0", true, false},
		{"udp://[::]:0", "::", true, true},
		{"udp://:0", "::", true, true},
	}
	for _, tt := range tests {
		sock := mustBind(t, tt.spec)
		host, port, err := net.SplitHostPort(sock.Addr.String())
		if err != nil || host != tt.addr {
			t.Errorf("Bind(%s) bound %s, want %s", tt.spec, sock.Addr, tt.addr)
		}
		if sock.Spec != mustSpec(t, tt.spec) {
			t.Errorf("Bind(%s).Spec = %#v: the spec as written is what the worker and the logs see", tt.spec, sock.Spec)
		}
		for _, c := range []struct {
			ip   string
			want bool
		}{{"127.0.0.1", tt.ipv4}, {"::1", tt.ipv6}} {
			if got := reaches(t, sock, net.JoinHostPort(c.ip, port)); got != c.want {
				t.Errorf("Bind(%s): %s reaches it: %v, want %v", tt.spec, c.ip, got, c.want)
			}
		}
		sock.Close()
	}
}

// reaches reports whether a client on addr gets to sock: a TCP connection
// is accepted (queued) or refused; a UDP datagram arrives or does not.
func reaches(t *testing.T, sock *sockets.Socket, addr string) bool {
	t.Helper()
	if !sock.Spec.IsPacket() {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	pc, err := net.FilePacketConn(sock.File)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	// A datagram to a port nobody is bound to is dropped: wait a bounded
	// while for it, as a client would.
	pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, _, err := pc.ReadFrom(make([]byte, 16))
	return err == nil && n == 4
}

// A unix socket whose file is deleted still listens, but nothing reaches
// it: FileIntact says so, and Rebind binds the path anew with its mode,
// the old descriptor closed. A live socket another process has put at the
// path is not intact either, and Rebind leaves it alone.
func TestRebindUnixFileDeleted(t *testing.T) {
	path := filepath.Join(shortDir(t), "app.sock")
	sock := mustBind(t, "unix://"+path+"?mode=0640")
	defer sock.Close()
	if !sock.FileIntact() {
		t.Fatal("a freshly bound socket's file is not intact")
	}
	old := sock.File
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if sock.FileIntact() || !sock.Listening() {
		t.Fatalf("file deleted: intact %v, listening %v; want false, true", sock.FileIntact(), sock.Listening())
	}
	if err := sock.Rebind(); err != nil {
		t.Fatalf("Rebind: %v", err)
	}
	if !sock.FileIntact() || !sock.Listening() {
		t.Fatalf("after Rebind: intact %v, listening %v", sock.FileIntact(), sock.Listening())
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("after Rebind, %s: %v %v; want a socket with mode 0640", path, fi, err)
	}
	if _, err := old.Stat(); err == nil {
		t.Fatal("the old descriptor is still open")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the socket bound anew: %v", err)
	}
	c.Close()

	// Replaced by another server's live socket: not ours to take.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if sock.FileIntact() {
		t.Fatal("another server's socket at the path counts as intact")
	}
	if err := sock.Rebind(); err == nil || !strings.Contains(err.Error(), "in use by a running server") {
		t.Fatalf("Rebind over a live socket: %v, want it refused", err)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the other server's socket after the refused Rebind: %v", err)
	} else {
		c.Close()
	}
}

// A socket that is not a unix socket of this process's own always has its
// file intact.
func TestFileIntactWithoutAFile(t *testing.T) {
	for _, spec := range []string{"tcp://127.0.0.1:0", "udp://127.0.0.1:0", "unix://@baton-test-" + fmt.Sprint(os.Getpid())} {
		sock := mustBind(t, spec)
		if !sock.FileIntact() {
			t.Errorf("%s: FileIntact false", spec)
		}
		sock.Close()
	}
}
