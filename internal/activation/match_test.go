package activation

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func tcpSocket(addr string, dual bool) Socket {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic(err)
	}
	return Socket{Name: "fd3", Addr: a, DualStack: dual}
}

func udpSocket(addr string, dual bool) Socket {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		panic(err)
	}
	return Socket{Name: "fd3", Addr: a, DualStack: dual}
}

func unixSocket(net_, path string) Socket {
	return Socket{Name: "fd3", Addr: &net.UnixAddr{Name: path, Net: net_}}
}

func TestMatches(t *testing.T) {
	var (
		any4    = tcpSocket("0.0.0.0:8080", false)
		dual    = tcpSocket("[::]:8080", true) // systemd's ListenStream=8080
		only6   = tcpSocket("[::]:8080", false)
		lo4     = tcpSocket("127.0.0.1:8080", false)
		lo6     = tcpSocket("[::1]:8080", false)
		mapped  = tcpSocket("[::ffff:127.0.0.1]:8080", false)
		http    = tcpSocket("[::]:80", true)
		udp     = udpSocket("[::]:5353", true)
		udpLo   = udpSocket("127.0.0.1:5353", false)
		stream  = unixSocket("unix", "/run/app.sock")
		dgram   = unixSocket("unixgram", "/run/app.dgram")
		abstr   = unixSocket("unix", "@baton")
		noname  = unixSocket("unix", "")
		nothing = Socket{Name: "fd3"}
	)
	for _, tc := range []struct {
		why              string
		s                Socket
		network, address string
		want             bool
	}{
		// A wildcard asked of plain tcp takes both families.
		{"empty host, systemd's dual-stack [::]", dual, "tcp", ":8080", true},
		{"empty host, an IPv6-only [::]", only6, "tcp", ":8080", true},
		{"empty host, 0.0.0.0", any4, "tcp", ":8080", true},
		{"[::], dual-stack [::]", dual, "tcp", "[::]:8080", true},
		{"[::], IPv6-only [::]", only6, "tcp", "[::]:8080", true},
		{"[::], 0.0.0.0", any4, "tcp", "[::]:8080", true},
		// 0.0.0.0 is IPv4, as systemd and --listen bind it.
		{"0.0.0.0, 0.0.0.0", any4, "tcp", "0.0.0.0:8080", true},
		{"0.0.0.0, the IPv4 of a dual-stack [::]", dual, "tcp", "0.0.0.0:8080", true},
		{"0.0.0.0, an IPv6-only [::]", only6, "tcp", "0.0.0.0:8080", false},
		// tcp4 and tcp6 name one family.
		{"tcp4 empty host, 0.0.0.0", any4, "tcp4", ":8080", true},
		{"tcp4 empty host, the IPv4 of a dual-stack [::]", dual, "tcp4", ":8080", true},
		{"tcp4 empty host, an IPv6-only [::]", only6, "tcp4", ":8080", false},
		{"tcp4 0.0.0.0, 0.0.0.0", any4, "tcp4", "0.0.0.0:8080", true},
		{"tcp4 [::] is 0.0.0.0 to Go, an IPv6-only [::]", only6, "tcp4", "[::]:8080", false},
		{"tcp4 [::] is 0.0.0.0 to Go, 0.0.0.0", any4, "tcp4", "[::]:8080", true},
		{"tcp6 empty host, dual-stack [::]", dual, "tcp6", ":8080", true},
		{"tcp6 empty host, IPv6-only [::]", only6, "tcp6", ":8080", true},
		{"tcp6 empty host, 0.0.0.0", any4, "tcp6", ":8080", false},
		{"tcp6 [::], dual-stack [::]", dual, "tcp6", "[::]:8080", true},
		{"tcp6 [::], 0.0.0.0", any4, "tcp6", "[::]:8080", false},
		{"tcp6 0.0.0.0 is no IPv6 address", dual, "tcp6", "0.0.0.0:8080", false},
		// A wildcard and one address are different sockets.
		{"empty host, 127.0.0.1", lo4, "tcp", ":8080", false},
		{"127.0.0.1, 0.0.0.0", any4, "tcp", "127.0.0.1:8080", false},
		{"127.0.0.1, dual-stack [::]", dual, "tcp", "127.0.0.1:8080", false},
		{"[::1], dual-stack [::]", dual, "tcp", "[::1]:8080", false},
		// One address.
		{"127.0.0.1, 127.0.0.1", lo4, "tcp", "127.0.0.1:8080", true},
		{"tcp4 127.0.0.1, 127.0.0.1", lo4, "tcp4", "127.0.0.1:8080", true},
		{"tcp6 127.0.0.1 is no IPv6 address", lo4, "tcp6", "127.0.0.1:8080", false},
		{"127.0.0.1, an IPv6 socket on ::ffff:127.0.0.1", mapped, "tcp", "127.0.0.1:8080", true},
		{"127.0.0.1, ::1", lo6, "tcp", "127.0.0.1:8080", false},
		{"[::1], ::1", lo6, "tcp", "[::1]:8080", true},
		{"tcp6 [::1], ::1", lo6, "tcp6", "[::1]:8080", true},
		{"tcp4 [::1] is no IPv4 address", lo6, "tcp4", "[::1]:8080", false},
		{"[::1], 127.0.0.1", lo4, "tcp", "[::1]:8080", false},
		{"localhost resolves as net.Listen would", lo4, "tcp", "localhost:8080", true},
		// Ports.
		{"another port", dual, "tcp", ":8081", false},
		{"another port on one address", lo4, "tcp", "127.0.0.1:8081", false},
		{"a named port", http, "tcp", ":http", true},
		{"port 0 never matches by address", tcpSocket("[::]:0", true), "tcp", ":0", false},
		{"port 0 on one address never matches either", tcpSocket("127.0.0.1:0", false), "tcp", "127.0.0.1:0", false},
		// Transports.
		{"tcp is not a datagram socket", udp, "tcp", ":5353", false},
		{"udp is not a stream socket", dual, "udp", ":8080", false},
		{"udp empty host, dual-stack [::]", udp, "udp", ":5353", true},
		{"udp4 empty host, the IPv4 of a dual-stack [::]", udp, "udp4", ":5353", true},
		{"udp6 0.0.0.0 is no IPv6 address", udp, "udp6", "0.0.0.0:5353", false},
		{"udp 127.0.0.1, 127.0.0.1", udpLo, "udp", "127.0.0.1:5353", true},
		{"udp another port", udpLo, "udp", "127.0.0.1:5354", false},
		// Unix: one path is one socket, whatever its type.
		{"unix, its path", stream, "unix", "/run/app.sock", true},
		{"unix, another path", stream, "unix", "/run/other.sock", false},
		{"unixgram, a stream socket on that path", stream, "unixgram", "/run/app.sock", true},
		{"unixgram, its path", dgram, "unixgram", "/run/app.dgram", true},
		{"unixpacket, a datagram socket on that path", dgram, "unixpacket", "/run/app.dgram", true},
		{"an abstract name", abstr, "unix", "@baton", true},
		{"no path is no address", noname, "unix", "", false},
		{"tcp is not a unix socket", stream, "tcp", "/run/app.sock", false},
		{"unix is not an IP socket", lo4, "unix", "127.0.0.1:8080", false},
		// Nonsense.
		{"no address known", nothing, "tcp", ":8080", false},
		{"no address known, unix", nothing, "unix", "/run/app.sock", false},
		{"an unknown network", dual, "ip6", ":8080", false},
		{"no network", dual, "", ":8080", false},
		{"no port", dual, "tcp", "8080", false},
	} {
		if got := tc.s.Matches(tc.network, tc.address); got != tc.want {
			t.Errorf("%s: socket on %v (dual-stack %v) Matches(%q, %q) = %v, want %v",
				tc.why, tc.s.Addr, tc.s.DualStack, tc.network, tc.address, got, tc.want)
		}
	}
}

func TestChoose(t *testing.T) {
	named := func(name string, s Socket) Socket { s.Name = name; return s }
	passed := []Socket{
		named("http", tcpSocket("127.0.0.1:8080", false)),
		named("app.socket", tcpSocket("[::]:9001", true)),
		named("app.socket", tcpSocket("127.0.0.1:9002", false)),
		named("fd6", tcpSocket("0.0.0.0:9003", false)),
		named("fd7", unixSocket("unix", "/run/a.sock")),
	}
	for _, tc := range []struct {
		why                    string
		name, network, address string
		want                   int
	}{
		{"the only one of its name, whatever its address", "http", "tcp", "127.0.0.1:1", 0},
		{"the only one of its name, even for port 0", "http", "tcp", "127.0.0.1:0", 0},
		{"of several of its name, the one on the address", "app.socket", "tcp", "127.0.0.1:9002", 2},
		{"of several of its name, the wildcard", "app.socket", "tcp", ":9001", 1},
		{"of several of its name, none on the address", "app.socket", "tcp", ":9003", -1},
		{"of none of its name, by address", "web", "tcp", ":9003", 3},
		{"of none of its name, by address though it has another name", "web", "tcp", ":9001", 1},
		{"of none of its name, a unix path", "web", "unix", "/run/a.sock", 4},
		{"of none of its name, no address", "web", "tcp", ":9999", -1},
		{"of none of its name, port 0", "web", "tcp", ":0", -1},
	} {
		if got := Choose(passed, tc.name, tc.network, tc.address); got != tc.want {
			t.Errorf("%s: Choose(%q, %q, %q) = %d, want %d", tc.why, tc.name, tc.network, tc.address, got, tc.want)
		}
	}
	if got := Choose(nil, "http", "tcp", ":8080"); got != -1 {
		t.Errorf("Choose among none = %d, want -1", got)
	}
}

// TestDescribe reads real sockets, bound the ways Go and systemd bind
// them, and checks that each then matches what it should.
func TestDescribe(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		why              string
		network, address string // bound with net.Listen or net.ListenPacket
		wantNet          string // of the Addr read
		wantDual         bool
		matches          map[[2]string]bool // network and address (":P" gets the port) → Matches
	}{
		{"IPv4 loopback", "tcp4", "127.0.0.1:0", "tcp", false,
			map[[2]string]bool{{"tcp", "127.0.0.1:P"}: true, {"tcp", ":P"}: false}},
		{"Go's dual-stack wildcard, as systemd binds ListenStream=PORT", "tcp", ":0", "tcp", true,
			map[[2]string]bool{{"tcp", ":P"}: true, {"tcp4", ":P"}: true, {"tcp6", ":P"}: true, {"tcp", "127.0.0.1:P"}: false}},
		{"an IPv6-only wildcard", "tcp6", "[::]:0", "tcp", false,
			map[[2]string]bool{{"tcp", ":P"}: true, {"tcp4", ":P"}: false, {"tcp6", ":P"}: true}},
		{"IPv4 wildcard", "tcp4", ":0", "tcp", false,
			map[[2]string]bool{{"tcp", ":P"}: true, {"tcp4", ":P"}: true, {"tcp6", ":P"}: false}},
		{"UDP", "udp4", "127.0.0.1:0", "udp", false,
			map[[2]string]bool{{"udp", "127.0.0.1:P"}: true, {"tcp", "127.0.0.1:P"}: false}},
		{"a unix stream socket", "unix", filepath.Join(dir, "s"), "unix", false,
			map[[2]string]bool{{"unix", filepath.Join(dir, "s")}: true}},
		{"a unix datagram socket", "unixgram", filepath.Join(dir, "g"), "unixgram", false,
			map[[2]string]bool{{"unixgram", filepath.Join(dir, "g")}: true}},
		{"a unix seqpacket socket", "unixpacket", filepath.Join(dir, "p"), "unixpacket", false,
			map[[2]string]bool{{"unixpacket", filepath.Join(dir, "p")}: true}},
	} {
		t.Run(tc.why, func(t *testing.T) {
			f, port := bindFile(t, tc.network, tc.address)
			s, err := Describe("x", f)
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != "x" || s.Addr == nil || s.Addr.Network() != tc.wantNet || s.DualStack != tc.wantDual {
				t.Fatalf("Describe = %+v, want a %s address, dual-stack %v", s, tc.wantNet, tc.wantDual)
			}
			for q, want := range tc.matches {
				addr := q[1]
				if port != "" {
					addr = addr[:len(addr)-1] + port
				}
				if got := s.Matches(q[0], addr); got != want {
					t.Errorf("socket on %v (dual-stack %v): Matches(%q, %q) = %v, want %v", s.Addr, s.DualStack, q[0], addr, got, want)
				}
			}
		})
	}
}

// bindFile binds network and address and returns a file of the socket,
// with its port when it is an IP socket.
func bindFile(t *testing.T, network, address string) (*os.File, string) {
	t.Helper()
	var (
		f    *os.File
		addr net.Addr
		err  error
	)
	switch network {
	case "udp4", "unixgram":
		var c net.PacketConn
		if c, err = net.ListenPacket(network, address); err == nil {
			addr = c.LocalAddr()
			f, err = c.(interface{ File() (*os.File, error) }).File()
			c.Close()
		}
	default:
		var l net.Listener
		if l, err = net.Listen(network, address); err == nil {
			addr = l.Addr()
			f, err = l.(interface{ File() (*os.File, error) }).File()
			l.Close()
		}
	}
	if err != nil {
		t.Fatalf("bind %s %s: %v", network, address, err)
	}
	t.Cleanup(func() { f.Close() })
	_, port, _ := net.SplitHostPort(addr.String())
	return f, port
}

// TestDescribeKeepsTheBlockingMode: the master and every generation
// share a passed socket's flags, and a Go worker's accept loop relies on
// O_NONBLOCK staying set.
func TestDescribeKeepsTheBlockingMode(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rc, _ := f.SyscallConn()
	nonblocking := func() (on bool) {
		rc.Control(func(fd uintptr) {
			fl, _, _ := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
			on = fl&syscall.O_NONBLOCK != 0
		})
		return on
	}
	rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
	if !nonblocking() {
		t.Fatal("could not set O_NONBLOCK")
	}
	if _, err := Describe("x", f); err != nil {
		t.Fatal(err)
	}
	if !nonblocking() {
		t.Fatal("Describe cleared O_NONBLOCK")
	}
}

func TestDescribeRefusesWhatIsNoSocket(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if s, err := Describe("pipe", r); err == nil {
		t.Fatalf("Describe(a pipe) = %+v, want an error", s)
	}
}
